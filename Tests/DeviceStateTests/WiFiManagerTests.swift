import Glibc
import Synchronization
import XCTest

@testable import DeviceState

final class WiFiManagerTests: XCTestCase {
    var store: StateStore!
    var sim: SimulatedWiFiBackend!
    final class Lines: Sendable { let lines = Mutex<[String]>([]) }
    let logLines = Lines()

    func makeManager(concurrent: Bool = false, configure: (inout DeviceConfig) -> Void = { _ in }) throws -> WiFiManager {
        store = try StateStore(directory: makeTemporaryDirectory(self))
        try store.updateConfig(configure)
        sim = SimulatedWiFiBackend(concurrent: concurrent)
        return WiFiManager(backend: sim, store: store, log: { [logLines] line in logLines.lines.withLock { $0.append(line) } })
    }

    var calls: [String] { sim.state.withLock { $0.calls } }
    func clearCalls() { sim.state.withLock { $0.calls = [] } }
    var apOpenInRadio: Bool { sim.state.withLock { $0.accessPoint != nil } }

    func testStartOpensTheAccessPointForTheTimeout() throws {
        let wifi = try makeManager {
            $0.accessPoint.timeoutSeconds = 120
            $0.wifi = WiFiClientConfig(ssid: "Gone", password: Secret("gone-pass"))
        }
        wifi.start(now: 1000)
        XCTAssertEqual(calls, ["scan", "startAccessPoint meterextension:0203"])
        XCTAssertEqual(sim.state.withLock { $0.accessPoint?.password.revealed }, "welinkwmlink")
        var status = wifi.status(now: 1030)
        XCTAssertEqual(status.accessPoint, AccessPointStatus(isOpen: true, ssid: "meterextension:0203", address: "10.42.0.1", closesInSeconds: 90))
        wifi.tick(now: 1119)
        XCTAssertTrue(apOpenInRadio)
        wifi.tick(now: 1120)
        XCTAssertFalse(apOpenInRadio)
        XCTAssertEqual(calls.suffix(2), ["stopAccessPoint", "connect Gone"])
        status = wifi.status(now: 1121)
        XCTAssertFalse(status.accessPoint.isOpen)
        XCTAssertNil(status.accessPoint.closesInSeconds)
        XCTAssertEqual(store.state.startCount, 1)
    }

    func testPerDevicePasswordIsUsed() throws {
        let wifi = try makeManager { $0.accessPoint.password = Secret("per-device-pw") }
        wifi.start(now: 0)
        XCTAssertEqual(sim.state.withLock { $0.accessPoint?.password.revealed }, "per-device-pw")
    }

    func testConfigureJoinsThenStores() throws {
        let wifi = try makeManager()
        wifi.start(now: 0)
        let result = wifi.configure(WiFiConfigRequest(ssid: "HomeNet", password: Secret("homenet-pass"), mode: "sta"), now: 10)
        XCTAssertEqual(result, .success(WiFiClientConfig(ssid: "HomeNet", password: Secret("homenet-pass"), mode: .sta)))
        XCTAssertEqual(store.config.wifi, WiFiClientConfig(ssid: "HomeNet", password: Secret("homenet-pass"), mode: .sta))
        let fields = wifi.status(now: 11).apiFields
        XCTAssertEqual(fields["ssid"], "HomeNet")
        XCTAssertEqual(fields["rssi"], "-63")
        XCTAssertEqual(fields["ap-mac"], "DC:A6:32:01:02:03")
        XCTAssertEqual(fields["IP"], "192.168.1.50")
        XCTAssertEqual(fields["state"], "connected")
        XCTAssertEqual(fields["last-error"], "")
        // Single radio: joining took the radio from the access point.
        XCTAssertEqual(fields["ap"], "closed")
        XCTAssertEqual(store.state.lastConnectedSSID, "HomeNet")
    }

    func testWrongPasswordKeepsTheOldNetworkAndTheAccessPoint() throws {
        let wifi = try makeManager(concurrent: true) {
            $0.wifi = WiFiClientConfig(ssid: "Office-5G", password: Secret("office-pass"))
        }
        wifi.start(now: 0)
        XCTAssertEqual(wifi.status(now: 0).link.ssid, "Office-5G")
        clearCalls()
        let result = wifi.configure(WiFiConfigRequest(ssid: "HomeNet", password: Secret("not-the-password")), now: 300)
        XCTAssertEqual(result, .failure(.wrongPassword))
        XCTAssertEqual(store.config.wifi, WiFiClientConfig(ssid: "Office-5G", password: Secret("office-pass")))
        XCTAssertEqual(calls, ["connect HomeNet", "connect Office-5G"])
        let status = wifi.status(now: 301)
        XCTAssertEqual(status.link.ssid, "Office-5G")
        XCTAssertEqual(status.lastFailure, "cannot join HomeNet: wrong password")
        XCTAssertEqual(store.state.lastWiFiFailure, "cannot join HomeNet: wrong password")
        // The access point stays open, for a full timeout from the failure.
        XCTAssertTrue(status.accessPoint.isOpen)
        XCTAssertEqual(status.accessPoint.closesInSeconds, 599)
        XCTAssertFalse(logLines.lines.withLock { $0.joined() }.contains("not-the-password"))
    }

    func testFailureOnSingleRadioReopensTheAccessPoint() throws {
        let wifi = try makeManager()
        wifi.start(now: 0)
        XCTAssertEqual(wifi.configure(WiFiConfigRequest(ssid: "Nowhere", password: Secret("whatever1")), now: 5), .failure(.networkNotFound("Nowhere")))
        XCTAssertTrue(apOpenInRadio)
        XCTAssertNil(store.config.wifi)
        XCTAssertEqual(wifi.status(now: 5).apiFields["last-error"], "cannot join Nowhere: network \"Nowhere\" not found")
    }

    func testMissingFieldsComeFromTheStoredConfiguration() throws {
        let wifi = try makeManager(concurrent: true) {
            $0.wifi = WiFiClientConfig(ssid: "HomeNet", password: Secret("homenet-pass"), mode: .sta)
        }
        wifi.start(now: 0)
        // No password, same SSID: the stored one is used. No mode: kept.
        XCTAssertEqual(wifi.configure(WiFiConfigRequest(ssid: "HomeNet"), now: 1), .success(WiFiClientConfig(ssid: "HomeNet", password: Secret("homenet-pass"), mode: .sta)))
        // Only a mode: applied without reconnecting, and the access point stays open for good.
        clearCalls()
        XCTAssertEqual(wifi.configure(WiFiConfigRequest(mode: "sta_ap"), now: 2), .success(WiFiClientConfig(ssid: "HomeNet", password: Secret("homenet-pass"), mode: .staAP)))
        XCTAssertEqual(calls, [])
        wifi.tick(now: 10_000)
        XCTAssertTrue(wifi.status(now: 10_000).accessPoint.isOpen)
        XCTAssertNil(wifi.status(now: 10_000).accessPoint.closesInSeconds)
        // Another SSID without password is tried as an open network.
        XCTAssertEqual(wifi.configure(WiFiConfigRequest(ssid: "CafeOpen"), now: 3), .success(WiFiClientConfig(ssid: "CafeOpen", password: nil, mode: .staAP)))
    }

    func testInvalidRequestsAreRefusedBeforeTouchingTheRadio() throws {
        let wifi = try makeManager()
        wifi.start(now: 0)
        clearCalls()
        XCTAssertEqual(wifi.configure(WiFiConfigRequest(password: Secret("homenet-pass")), now: 1), .failure(.invalidInput("ssid is missing")))
        XCTAssertEqual(wifi.configure(WiFiConfigRequest(ssid: "HomeNet", password: Secret("short")), now: 1), .failure(.invalidInput("password must have 8 to 63 characters")))
        XCTAssertEqual(wifi.configure(WiFiConfigRequest(ssid: "HomeNet", mode: "ap"), now: 1), .failure(.invalidInput("mode must be \"sta\" or \"sta_ap\"")))
        XCTAssertEqual(wifi.configure(WiFiConfigRequest(ssid: String(repeating: "x", count: 33)), now: 1), .failure(.invalidInput("ssid is longer than 32 bytes")))
        guard case .failure(.radioBusy(let why)) = wifi.configure(WiFiConfigRequest(ssid: "HomeNet", password: Secret("homenet-pass"), mode: "sta_ap"), now: 1) else {
            return XCTFail("sta_ap accepted on a single radio")
        }
        XCTAssertTrue(why.contains("cannot run the access point and a client connection at the same time"), why)
        XCTAssertEqual(calls, [])
        XCTAssertNil(store.config.wifi)
    }

    /// Power cut: the board boots before the router. It must keep trying, back off, and
    /// reopen the access point while the network stays away.
    func testUnreachableNetworkIsRetriedWithBackOffAndTheAccessPointReopens() throws {
        let wifi = try makeManager {
            $0.wifi = WiFiClientConfig(ssid: "HomeNet", password: Secret("homenet-pass"))
            $0.accessPoint.timeoutSeconds = 600
            $0.accessPoint.reopenAfterNoConnectionSeconds = 900
        }
        sim.setReachable(false)
        wifi.start(now: 0)
        clearCalls()
        // Single radio: no client attempts while the access point is open.
        for t in stride(from: 0.0, to: 600, by: 5) { wifi.tick(now: t) }
        XCTAssertEqual(calls, [])
        var attempts: [Double] = []
        for t in stride(from: 600.0, through: 1500, by: 5) {
            let before = calls.filter { $0.hasPrefix("connect") }.count
            wifi.tick(now: t)
            if calls.filter({ $0.hasPrefix("connect") }).count > before { attempts.append(t) }
        }
        // 10 s doubling to 5 min: 600, 610, 630, 670, 750, 910, 1210; reopened at 600 + 900.
        XCTAssertEqual(attempts, [600, 610, 630, 670, 750, 910, 1210])
        XCTAssertEqual(calls.last, "startAccessPoint meterextension:0203")
        XCTAssertTrue(wifi.status(now: 1500).accessPoint.isOpen)
        XCTAssertEqual(wifi.status(now: 1500).lastFailure, "cannot join HomeNet: network \"HomeNet\" not found")

        // The router is back; when the access point closes the board joins at once.
        sim.setReachable(true)
        wifi.tick(now: 2099)
        XCTAssertFalse(wifi.status(now: 2099).link.state == .connected)
        wifi.tick(now: 2100)
        XCTAssertEqual(wifi.status(now: 2100).link.ssid, "HomeNet")
        XCTAssertFalse(wifi.status(now: 2100).accessPoint.isOpen)
        // Connected: the access point does not reopen.
        wifi.tick(now: 5000)
        XCTAssertFalse(wifi.status(now: 5000).accessPoint.isOpen)
    }

    func testConcurrentRadioRetriesWhileTheAccessPointIsOpen() throws {
        let wifi = try makeManager(concurrent: true) { $0.wifi = WiFiClientConfig(ssid: "HomeNet", password: Secret("homenet-pass")) }
        sim.setReachable(false)
        wifi.start(now: 0)
        XCTAssertTrue(calls.contains("connect HomeNet"))
        sim.setReachable(true)
        wifi.tick(now: 10)
        XCTAssertEqual(wifi.status(now: 10).link.state, .connected)
        XCTAssertTrue(wifi.status(now: 10).accessPoint.isOpen)
        XCTAssertEqual(calls.filter { $0 == "connect HomeNet" }.count, 2)
        // Reconnected on its own: the old failure is no longer news.
        XCTAssertNil(wifi.status(now: 10).lastFailure)
    }

    func testButtonAndRequestReopenTheAccessPoint() throws {
        let wifi = try makeManager {
            $0.accessPoint.timeoutSeconds = 60
            $0.wifi = WiFiClientConfig(ssid: "HomeNet", password: Secret("homenet-pass"))
        }
        wifi.start(now: 0)
        wifi.tick(now: 60)
        XCTAssertFalse(apOpenInRadio)
        XCTAssertNoThrow(try wifi.setupButtonPressed(now: 100).get())
        XCTAssertTrue(apOpenInRadio)
        XCTAssertEqual(wifi.status(now: 100).accessPoint.closesInSeconds, 60)
        XCTAssertNoThrow(try wifi.closeAccessPoint(now: 101).get())
        XCTAssertFalse(apOpenInRadio)
        XCTAssertNoThrow(try wifi.openAccessPoint(now: 200).get())
        XCTAssertTrue(apOpenInRadio)
        wifi.tick(now: 260)
        XCTAssertFalse(apOpenInRadio)
    }

    func testFactoryResetForgetsWiFiAndReopensTheAccessPoint() throws {
        let wifi = try makeManager { $0.accessPoint.password = Secret("per-device-pw") }
        wifi.start(now: 0)
        XCTAssertNoThrow(try wifi.configure(WiFiConfigRequest(ssid: "HomeNet", password: Secret("homenet-pass")), now: 1).get())
        XCTAssertFalse(apOpenInRadio)
        clearCalls()
        try wifi.factoryReset(now: 50)
        XCTAssertNil(store.config.wifi)
        XCTAssertEqual(calls, ["forgetClient", "startAccessPoint meterextension:0203"])
        XCTAssertEqual(sim.state.withLock { $0.accessPoint?.password.revealed }, "welinkwmlink")
        XCTAssertEqual(wifi.status(now: 50).link.state, .disconnected)
        // No network configured any more: the access point stays open until one is.
        XCTAssertTrue(wifi.status(now: 50).accessPoint.isOpen)
        XCTAssertNil(wifi.status(now: 50).accessPoint.closesInSeconds)
        XCTAssertEqual(wifi.status(now: 50).accessPointReason, .factoryReset)
        wifi.tick(now: 5000)
        XCTAssertTrue(apOpenInRadio)
    }

    /// Bad input: the radio disappears. Clear error, configuration kept, and once it is back the board gets a way in.
    func testRadioThatDisappearsIsReportedAndTheBoardComesBack() throws {
        let wifi = try makeManager {
            $0.wifi = WiFiClientConfig(ssid: "HomeNet", password: Secret("homenet-pass"))
            $0.accessPoint.reopenAfterNoConnectionSeconds = 900
        }
        wifi.start(now: 0)
        wifi.tick(now: 600)
        XCTAssertEqual(wifi.status(now: 600).link.state, .connected)
        sim.setPresent(false)
        for t in stride(from: 605.0, through: 1600, by: 5) { wifi.tick(now: t) }
        let status = wifi.status(now: 1600)
        XCTAssertEqual(status.link.state, .disconnected)
        XCTAssertFalse(status.accessPoint.isOpen)
        XCTAssertEqual(status.lastFailure, "cannot open the access point: no WiFi interface wlan0 (the radio is gone)")
        XCTAssertEqual(store.config.wifi?.ssid, "HomeNet", "the configuration stays")
        // Plugged back after more than 15 minutes without a connection: the next tick opens the access point
        // (a way in at once); when it closes the board rejoins its network.
        sim.setPresent(true)
        wifi.tick(now: 1605)
        XCTAssertTrue(wifi.status(now: 1605).accessPoint.isOpen)
        XCTAssertEqual(wifi.status(now: 1605).accessPointReason, .unreachable)
        wifi.tick(now: 2205)
        XCTAssertEqual(wifi.status(now: 2205).link.state, .connected)
        XCTAssertNil(wifi.status(now: 2205).lastFailure)
    }

    func testNewAccessPointPasswordRestartsAnOpenAccessPoint() throws {
        let wifi = try makeManager()
        wifi.start(now: 0)
        clearCalls()
        try wifi.setAccessPointPassword(Secret("label-pass-42"), now: 5)
        XCTAssertEqual(calls, ["stopAccessPoint", "startAccessPoint meterextension:0203"])
        XCTAssertEqual(sim.state.withLock { $0.accessPoint?.password.revealed }, "label-pass-42")
        XCTAssertEqual(store.config.accessPoint.password, Secret("label-pass-42"))
        try wifi.factoryReset(now: 6)
        XCTAssertEqual(sim.state.withLock { $0.accessPoint?.password.revealed }, "welinkwmlink")
    }

    func testGeneratedAccessPointPasswords() throws {
        let a = try WiFiAccessPointPassword.generate().revealed, b = try WiFiAccessPointPassword.generate().revealed
        XCTAssertNotEqual(a, b)
        for p in [a, b] {
            XCTAssertEqual(p.count, 14, p)
            XCTAssertNil(WiFiAccessPointPassword.problem(with: p))
            XCTAssertFalse(p.contains { "01oil".contains($0) }, p)
        }
        XCTAssertNotNil(WiFiAccessPointPassword.problem(with: "short"))
        XCTAssertNotNil(WiFiAccessPointPassword.problem(with: "tab\tinside-it"))
        XCTAssertNotNil(WiFiAccessPointPassword.problem(with: String(repeating: "x", count: 64)))
    }

    func testWithoutAConfiguredNetworkTheAccessPointStaysOpen() throws {
        let wifi = try makeManager { $0.accessPoint.timeoutSeconds = 60 }
        wifi.start(now: 0)
        XCTAssertEqual(wifi.status(now: 0).accessPointReason, .notConfigured)
        wifi.tick(now: 10_000)
        XCTAssertTrue(apOpenInRadio)
        XCTAssertNil(wifi.status(now: 10_000).accessPoint.closesInSeconds)
        // Configured from the phone: from now on the usual timeout applies (single radio: joining closed it).
        XCTAssertNoThrow(try wifi.configure(WiFiConfigRequest(ssid: "HomeNet", password: Secret("homenet-pass")), now: 10_001).get())
        XCTAssertFalse(apOpenInRadio)
    }

    func testScanFallsBackToTheListFromBeforeTheAccessPointOpened() throws {
        let wifi = try makeManager()
        wifi.start(now: 0)
        XCTAssertEqual(wifi.scan().map(\.ssid), ["HomeNet", "Office-5G", "CafeOpen"])
        sim.setReachable(false)  // stands in for a radio that refuses to scan in AP mode
        XCTAssertEqual(wifi.scan().map(\.ssid), ["HomeNet", "Office-5G", "CafeOpen"])
    }

    func testSimulatorRules() throws {
        let sim = SimulatedWiFiBackend()
        XCTAssertEqual(sim.connect(ssid: "HomeNet", password: Secret("homenet"), timeout: 1).failureValue, .invalidInput("password must have 8 to 63 characters"))
        XCTAssertEqual(sim.connect(ssid: "HomeNet", password: Secret("homenet-wrong"), timeout: 1).failureValue, .wrongPassword)
        XCTAssertEqual(sim.connect(ssid: "Elsewhere", password: Secret("homenet-pass"), timeout: 1).failureValue, .networkNotFound("Elsewhere"))
        XCTAssertNoThrow(try sim.connect(ssid: "CafeOpen", password: nil, timeout: 1).get())
        XCTAssertEqual(try sim.status().ssid, "CafeOpen")
    }
}

/// Issue 13: a service restart is not a boot. The runtime directory (a temp dir here; /run/meterext on a board)
/// holds the boot marker; the simulated radio keeps its state in it as NetworkManager keeps its own.
final class WiFiRestartTests: XCTestCase {
    func testConnectedBoardStaysConnectedAcrossServiceRestarts() throws {
        let stateDir = makeTemporaryDirectory(self), runDir = makeTemporaryDirectory(self) + "/run"
        func service() throws -> (WiFiManager, SimulatedWiFiBackend) {
            let sim = SimulatedWiFiBackend(persistPath: runDir + "/sim-radio.json")
            return (WiFiManager(backend: sim, store: try StateStore(directory: stateDir), runtime: WiFiRuntime(directory: runDir)), sim)
        }
        var (wifi, sim) = try service()
        wifi.start(now: 0)
        XCTAssertTrue(wifi.status(now: 0).accessPoint.isOpen, "first start of the boot")
        XCTAssertNoThrow(try wifi.configure(WiFiConfigRequest(ssid: "HomeNet", password: Secret("homenet-pass")), now: 10).get())
        XCTAssertEqual(wifi.status(now: 10).link.state, .connected)

        for restart in 1...3 {
            (wifi, sim) = try service()
            wifi.start(now: 100 * Double(restart))
            let status = wifi.status(now: 100 * Double(restart))
            XCTAssertEqual(status.link.state, .connected, "restart \(restart)")
            XCTAssertFalse(status.accessPoint.isOpen, "restart \(restart)")
            XCTAssertFalse(sim.state.withLock { $0.calls }.contains { $0.hasPrefix("startAccessPoint") || $0.hasPrefix("connect") })
            wifi.tick(now: 100 * Double(restart) + 5)
            XCTAssertFalse(wifi.accessPointIsOpen)
        }

        // A reboot empties /run: the access point opens as the description says.
        _ = try Subprocess().run("rm", ["-rf", .plain(runDir)], timeout: 10)
        (wifi, sim) = try service()
        wifi.start(now: 1)
        XCTAssertTrue(wifi.status(now: 1).accessPoint.isOpen)
        XCTAssertEqual(wifi.status(now: 1).accessPointReason, .newBoot)
    }

    func testRestartWhileTheAccessPointIsOpenKeepsItsDeadline() throws {
        let stateDir = makeTemporaryDirectory(self), runDir = makeTemporaryDirectory(self)
        let store = try StateStore(directory: stateDir)
        try store.updateConfig { $0.wifi = WiFiClientConfig(ssid: "HomeNet", password: Secret("homenet-pass")) }
        let first = WiFiManager(backend: SimulatedWiFiBackend(persistPath: runDir + "/sim.json"), store: store, runtime: WiFiRuntime(directory: runDir))
        first.start(now: 0)
        XCTAssertEqual(first.status(now: 0).accessPoint.closesInSeconds, 600)
        let sim = SimulatedWiFiBackend(persistPath: runDir + "/sim.json")
        let second = WiFiManager(backend: sim, store: try StateStore(directory: stateDir), runtime: WiFiRuntime(directory: runDir))
        second.start(now: 200)
        XCTAssertEqual(second.status(now: 200).accessPoint.closesInSeconds, 400)
        XCTAssertFalse(sim.state.withLock { $0.calls }.contains { $0.hasPrefix("startAccessPoint") })
        second.tick(now: 600)
        XCTAssertEqual(second.status(now: 600).link.state, .connected)
        XCTAssertFalse(sim.accessPointIsUp)
    }
}

/// Issue 18: the policy's memory is written to the runtime directory when it changes, not at every 5 s tick (a JSON
/// encoding, a file and an fsync each time while nothing happened).
final class WiFiMemoryWriteTests: XCTestCase {
    func testTheMemoryIsWrittenWhenItChangesNotAtEveryTick() throws {
        let stateDir = makeTemporaryDirectory(self), runDir = makeTemporaryDirectory(self)
        let store = try StateStore(directory: stateDir)
        try store.updateConfig { $0.wifi = WiFiClientConfig(ssid: "HomeNet", password: Secret("homenet-pass")) }
        let wifi = WiFiManager(backend: SimulatedWiFiBackend(persistPath: runDir + "/sim.json"), store: store,
                               runtime: WiFiRuntime(directory: runDir))
        let path = runDir + "/" + WiFiRuntime.memoryName
        wifi.start(now: 0)  // a new boot: the access point opens for 600 s
        XCTAssertEqual(access(path, F_OK), 0, "the memory is written at start")
        unlink(path)
        for t in stride(from: 5.0, through: 595, by: 5) { wifi.tick(now: t) }
        XCTAssertNotEqual(access(path, F_OK), 0, "ticks that change nothing rewrote the memory")
        wifi.tick(now: 600)  // the access point closes and the client joins: the memory changed
        XCTAssertFalse(wifi.accessPointIsOpen)
        XCTAssertEqual(access(path, F_OK), 0, "the changed memory was not written")
    }
}
