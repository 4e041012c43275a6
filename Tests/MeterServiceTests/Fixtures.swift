import FoundationEssentials
import KPM33B
import MeterService
import MeterTestSupport
import Synchronization

/// A MeterLink that returns whatever snapshot the test put in.
final class FakeMeterLink: MeterLink {
    private let state: Mutex<MeterSnapshot>
    private let relayResult: Mutex<Result<RelayState, FakeRelayError>?>
    let lineDescription = "9600 8E1, address 1"

    struct FakeRelayError: Error, CustomStringConvertible {
        var description: String
    }

    init(_ snapshot: MeterSnapshot) {
        state = Mutex(snapshot)
        relayResult = Mutex(nil)
    }

    func snapshot() -> MeterSnapshot { state.withLock { $0 } }

    func update(_ change: (inout MeterSnapshot) -> Void) {
        state.withLock {
            change(&$0)
            $0.generation += 1
        }
    }

    /// nil: the relay follows the command.
    func setRelayResult(_ r: Result<RelayState, FakeRelayError>?) { relayResult.withLock { $0 = r } }

    func setRelay(closed: Bool) async throws -> RelayState {
        let r = relayResult.withLock { $0 } ?? .success(RelayState(bits: closed ? 7 : 0))
        let state = try r.get()
        update { $0.relay = state }
        return state
    }
}

/// A snapshot with distinct, known values. Floats are placed by register address, independently of `Register`.
enum Fixture {
    static let basicReadAt: Int64 = 1_763_700_000
    static let energyReadAt: Int64 = 1_763_700_001
    static let demandReadAt: Int64 = 1_763_700_002
    /// 2025-11-21 10:00:00 UTC.
    static let historyReadAt: Int64 = 1_763_719_200
    static let relayReadAt: Int64 = 1_763_700_004
    static let serial = "33B0012345678"

    /// address → value, for every float the fixture sets.
    static func values(totalPower: Float) -> [UInt16: Float] {
        var v: [UInt16: Float] = [
            0x30: 230.14, 0x32: 231.26, 0x34: 229.91,        // V
            0x36: 5.254, 0x38: 4.5, 0x3A: 0.07,              // A
            0x3C: 399.1, 0x3E: 400.2, 0x40: 398.7,           // V line-line
            0x42: 1200.4, 0x44: -350.6, 0x46: 0,             // W per phase
            0x48: totalPower,
            0x4A: 120.2, 0x4C: -80.7, 0x4E: 10.0, 0x50: 49.5, // var
            0x52: 1300.3, 0x54: 700.6, 0x56: 20.2, 0x58: 2021.1, // VA
            0x5A: 0.923, 0x5C: -0.501, 0x5E: 1.0, 0x60: 0.8765,
            0x62: 50.02,
            0x200: 1500.4, 0x202: 800.5, 0x204: 60.6,        // VA demand
        ]
        // Energy block: kWh / kvarh values 1.5, 2.5, ... distinct per address.
        var addr: UInt16 = 0x68
        var x: Float = 1001.234
        while addr < 0x9C {
            v[addr] = x
            x += 111.111
            addr += 2
        }
        // History: run r, month m → 10000 * (r + 1) + m * 10.5
        for r in 0..<10 {
            for m in 0..<13 {
                v[0x9C + UInt16(r * 26 + m * 2)] = Float(10_000 * (r + 1)) + Float(m) * 10.5
            }
        }
        return v
    }

    static func block(start: UInt16, registers: UInt16, from v: [UInt16: Float]) -> [Float] {
        stride(from: start, to: start + registers, by: 2).map { v[$0] ?? 0 }
    }

    static func snapshot(totalPower: Float = -1234.4, health: LinkHealth = .online) -> MeterSnapshot {
        let v = values(totalPower: totalPower)
        var s = MeterSnapshot()
        s.generation = 1
        s.health = health
        s.publishedAt = basicReadAt + 5
        s.basic = block(start: 0x30, registers: 52, from: v)
        s.energy = block(start: 0x68, registers: 52, from: v)
        s.demand = block(start: 0x200, registers: 6, from: v)
        s.history = block(start: 0x9C, registers: 260, from: v)
        s.parameters = MeterParameters(
            serialNumber: serial, modbusAddress: 1, lineSettingsWord: 0x0003, controlModeWord: 0xDD22,
            loadThresholdKW: 7, clock: MeterClock(year: 25, month: 11, day: 21, hour: 10, minute: 4, second: 5),
            prepaidEnergyKWh: 0, overdraftKWh: 0, forcedPowerWords: (0, 0), wirelessStatusWord: 0)
        s.relay = RelayState(bits: 7)
        s.readAt[RegisterGroup.basic.rawValue] = basicReadAt
        s.readAt[RegisterGroup.energy.rawValue] = energyReadAt
        s.readAt[RegisterGroup.demand.rawValue] = demandReadAt
        s.readAt[RegisterGroup.history.rawValue] = historyReadAt
        s.readAt[RegisterGroup.parameters.rawValue] = basicReadAt
        s.readAt[RegisterGroup.relay.rawValue] = relayReadAt
        s.counters.transactions = 42
        s.counters.timeouts = 3
        s.cycleMicroseconds = 812_345
        return s
    }

    static func api(link: FakeMeterLink, settings: InMemoryDeviceSettings = InMemoryDeviceSettings(),
                    system: RecordingSystemControl = RecordingSystemControl(),
                    status: (@Sendable () -> Int?)? = nil) -> MeterAPI {
        MeterAPI(link: link, settings: settings, system: system,
                 network: FixedNetworkInfo(info: IPInfo(interface: "wlan0", address: "192.168.0.158",
                                                        netmask: "255.255.255.0", gateway: "192.168.0.1"),
                                           mac: "b8:27:eb:01:02:03"),
                 identity: DeviceIdentity(softwareVersion: "1.2.3", hardwareVersion: "rpi-test"),
                 operatingStatus: status, calendar: UTCSettlementCalendar(), now: { 1_763_719_999 })
    }
}

/// Decoded `meter_reading` reply, for assertions (values stay strings, as on the wire).
struct ReadingDTO: Decodable {
    struct Meter: Decodable {
        var meterid: String
        var data: [Entry]
        var status: String?
        var reason: String?
    }
    struct Entry: Decodable {
        var OBIS: String
        var scale: String
        var unit: String
        var entry: [Sample]
    }
    struct Sample: Decodable {
        var ts: String
        var val: String
    }
    var meter: [Meter]
    var result: String
    var id: RequestID?
}

func decode<T: Decodable>(_ type: T.Type, _ bytes: [UInt8]) throws -> T {
    try JSONDecoder().decode(T.self, from: Data(bytes))
}

func text(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }
