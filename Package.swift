// swift-tools-version:6.0
import PackageDescription

// Layers, bottom up (each only imports the ones below it; every concept is defined once, in the lowest layer that
// needs it):
//   CPlatform        C shim for calls Swift cannot make: serial ioctls, ppoll, pipe2, ptys, prctl, thread names
//   Platform         SystemError, EINTR retry, descriptor I/O with deadlines, the monotonic clock, atomic files,
//                    small-file reads, named threads, directory listing, ListenAddress
//   ModbusCore       pure protocol: CRC, ADU codec, master transaction state machine, frame timing, line settings
//   CGPIOD           C shim over libgpiod 1.6 / 2.x (API picked at compile time); libgpiod only
//   MeterHardware    termios serial port, pty pairs, RS485 direction control, RTU master/slave transports
//   KPM33B           register map, poll loop, snapshot exchange, simulator (Platform + ModbusCore only)
//   MeterStatus      CalinMeter code tables and the status engine (pure)
//   DeviceState      config/state store, WiFi backends
//   BoardSupport     board profiles, systemd notify/watchdog, status LED, journald-style log
//   MeterService     OBIS mapping and the /api command dispatcher (no networking, no /proc or /sys)
//   FirmwareUpdate   signed update images, side-by-side slots with trial/rollback, libcurl downloads (CCurl, CSodium)
//   LinuxSystem      system adapters behind MeterService's protocols (/proc, /sys, getifaddrs)
//   MeterHTTP        thin SwiftNIO HTTP/1.1 adapter over MeterService
//   meterext         the one executable (swift-argument-parser)
//   MeterTestSupport test doubles of MeterService's protocols; only test targets and fuzzers link it
// Issue 18 (binary size): modules off the hot paths (the Modbus poll, the HTTP and Modbus TCP servers, the history
// queries and the MQTT backlog, which have figures in docs/benchmarks.md) are optimised for size in release builds.
// -Osize everywhere (SwiftNIO included) costs the Modbus transaction 28 % more instructions; see
// Tests/bench/notes.md, "Binary size".
let coldCode: [SwiftSetting] = [.unsafeFlags(["-Osize"], .when(configuration: .release))]

let package = Package(
    name: "meterext",
    platforms: [.macOS(.v15)],
    products: [.executable(name: "meterext", targets: ["meterext"])],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        // Issue 16 (fleet): /metrics from swift-prometheus' registry and text exposition (it brings swift-metrics).
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    ],
    targets: [
        .target(name: "CPlatform"),
        .target(name: "Platform", dependencies: ["CPlatform"]),
        .target(name: "ModbusCore"),
        .target(name: "CGPIOD", linkerSettings: [.linkedLibrary("gpiod")]),
        .target(name: "MeterHardware", dependencies: ["Platform", "CPlatform", "ModbusCore", "CGPIOD"]),
        .target(name: "KPM33B", dependencies: ["Platform", "ModbusCore"]),
        .target(name: "MeterStatus", swiftSettings: coldCode),
        .target(name: "DeviceState", dependencies: ["Platform"], swiftSettings: coldCode),
        .target(name: "BoardSupport", dependencies: ["Platform", "ModbusCore", "MeterHardware"], swiftSettings: coldCode),
        .target(name: "MeterService", dependencies: ["Platform", "KPM33B", "MeterStatus", "DeviceState", "BoardSupport"]),
        .target(name: "LinuxSystem", dependencies: ["Platform", "MeterService"], swiftSettings: coldCode),
        .target(name: "MeterTestSupport", dependencies: ["MeterService"]),
        .systemLibrary(name: "CSodium", pkgConfig: "libsodium", providers: [.apt(["libsodium-dev"])]),
        // Issue 18: libcurl is loaded with dlopen at the first transfer (Sources/CCurl), not linked: only its headers.
        .target(name: "CCurl", dependencies: ["CPlatform"]),
        .target(name: "FirmwareUpdate", dependencies: ["Platform", "CCurl", "CSodium"], swiftSettings: coldCode),
        // Issue 15: the load-profile store (SQLite from Debian) and meter_history.
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        .target(name: "History", dependencies: ["Platform", "KPM33B", "CSQLite", "MeterService"]),
        .target(name: "MeterHTTP", dependencies: [
            "Platform", "MeterService",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
        ]),
        // Issue 16 (fleet): MQTT uplink over libmosquitto (CMosquitto), its I/O-free session machine and HA
        // discovery (Fleet), and the Prometheus /metrics text (GatewayMetrics).
        // Issue 18: libmosquitto is loaded with dlopen when the uplink starts (Sources/CMosquitto), not linked: a board
        // without an uplink maps neither it nor OpenSSL. Only its headers (libmosquitto-dev) are needed to build.
        .target(name: "CMosquitto", dependencies: ["CPlatform"]),
        .target(name: "Fleet", dependencies: ["Platform", "KPM33B", "CMosquitto"]),
        .target(name: "GatewayMetrics", dependencies: [
            "Platform", "KPM33B",
            .product(name: "Prometheus", package: "swift-prometheus"),
        ], swiftSettings: coldCode),
        // Issue 17: Modbus TCP server over the meters' snapshots and the shared bus.
        .target(name: "ModbusTCP", dependencies: [
            "Platform", "ModbusCore", "KPM33B",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
        ]),
        .executableTarget(name: "meterext", dependencies: [
            "ModbusTCP",
            "Platform", "LinuxSystem", "MeterHTTP", "MeterService", "KPM33B", "MeterHardware", "BoardSupport", "DeviceState", "MeterStatus",
            "FirmwareUpdate", "History",
            "Fleet", "GatewayMetrics",  // issue 16
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
        ], swiftSettings: coldCode),
        .testTarget(name: "PlatformTests", dependencies: ["Platform"]),
        .testTarget(name: "ModbusCoreTests", dependencies: ["ModbusCore"]),
        .testTarget(name: "MeterHardwareTests", dependencies: ["Platform", "MeterHardware"]),
        .testTarget(name: "KPM33BTests", dependencies: ["Platform", "KPM33B"]),
        .testTarget(name: "MeterStatusTests", dependencies: ["MeterStatus"]),
        .testTarget(name: "DeviceStateTests", dependencies: ["Platform", "DeviceState"], exclude: ["Fixtures"]),
        .testTarget(name: "BoardSupportTests", dependencies: ["Platform", "BoardSupport"]),
        .testTarget(name: "MeterServiceTests", dependencies: ["Platform", "MeterService", "MeterTestSupport"]),
        .testTarget(name: "LinuxSystemTests", dependencies: ["LinuxSystem"]),
        .testTarget(name: "FirmwareUpdateTests", dependencies: ["Platform", "FirmwareUpdate"]),
        .testTarget(name: "HistoryTests", dependencies: ["Platform", "KPM33B", "History", "MeterService"]),
        .testTarget(name: "FleetTests", dependencies: ["Fleet", "GatewayMetrics", "KPM33B"]),  // issue 16
        .testTarget(name: "MeterHTTPTests", dependencies: [
            "MeterHTTP", "MeterTestSupport",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOEmbedded", package: "swift-nio"),
        ]),
        .testTarget(name: "ModbusTCPTests", dependencies: ["ModbusTCP", "KPM33B", "ModbusCore"]),
    ],
    swiftLanguageModes: [.v5]
)
