import Platform
import FoundationEssentials
import Glibc
import XCTest

@testable import DeviceState

/// Runs the real `NetworkManagerBackend` against Fixtures/nmcli (a fake that answers in
/// nmcli's terse, escaped format and records its calls), found on PATH.
final class NetworkManagerBackendTests: XCTestCase {
    var dir = ""

    let scenario = """
        {"mac": "dc:a6:32:0a:b1:c2",
         "networks": [
           {"ssid": "HomeNet", "bssid": "AA:BB:CC:00:00:01", "chan": 6, "freq": 2437, "signal": 60, "security": "WPA2", "password": "homenet-pass"},
           {"ssid": "HomeNet", "bssid": "AA:BB:CC:00:00:02", "chan": 1, "freq": 2412, "signal": 80, "security": "WPA2", "password": "homenet-pass"},
           {"ssid": "Cafe:Free\\\\Wifi", "bssid": "AA:BB:CC:00:00:03", "chan": 36, "freq": 5180, "signal": 42, "security": "", "password": null},
           {"ssid": "", "bssid": "AA:BB:CC:00:00:04", "chan": 11, "freq": 2462, "signal": 90, "security": "WPA2", "password": null},
           {"ssid": "meterextension:1234", "bssid": "AA:BB:CC:00:00:05", "chan": 11, "freq": 2462, "signal": 95, "security": "WPA2", "password": null}
         ]}
        """

    override func setUpWithError() throws {
        dir = makeTemporaryDirectory(self)
        try writeText(scenario, to: dir + "/scenario.json")
    }

    func makeBackend(_ configuration: NetworkManagerBackend.Configuration = .init()) -> NetworkManagerBackend {
        NetworkManagerBackend(
            configuration: configuration,
            environment: ["PATH=\(fixturesDirectory):/usr/bin:/bin", "FAKE_NMCLI_DIR=\(dir)"])
    }

    func calls() throws -> [[String]] {
        guard let text = try readText(dir + "/calls.log") else { return [] }
        return try text.split(separator: "\n").map { try JSONDecoder().decode([String].self, from: Data($0.utf8)) }
    }

    func setScenario(_ transform: (String) -> String) throws {
        try writeText(transform(scenario), to: dir + "/scenario.json")
    }

    func testTerseParserUnescapesColonsAndBackslashes() {
        XCTAssertEqual(NmcliTerse.fields(#"*:DC\:A6\:32\:01\:02\:03:My\\Net\:5:6"#), ["*", "DC:A6:32:01:02:03", #"My\Net:5"#, "6"])
        XCTAssertEqual(NmcliTerse.fields("::"), ["", "", ""])
        let props = NmcliTerse.properties("GENERAL.HWADDR:DC\\:A6\\:32\\:01\\:02\\:03\nIP6.ADDRESS[1]:fe80\\:\\:1/64\n")
        XCTAssertEqual(props.map(\.name), ["GENERAL.HWADDR", "IP6.ADDRESS[1]"])
        XCTAssertEqual(props.map(\.value), ["DC:A6:32:01:02:03", "fe80::1/64"])
    }

    func testMACAndAccessPointName() throws {
        let backend = makeBackend()
        let mac = try backend.macAddress()
        XCTAssertEqual(mac, "DC:A6:32:0A:B1:C2")
        XCTAssertEqual(accessPointSSID(forMAC: mac), "meterextension:B1C2")
        XCTAssertEqual(try calls(), [["-t", "-e", "yes", "-f", "GENERAL.HWADDR", "device", "show", "wlan0"]])
    }

    func testScanParsesEscapedFieldsDeduplicatesAndHidesOwnAndHiddenNetworks() throws {
        let networks = try makeBackend().scan()
        XCTAssertEqual(networks, [
            WiFiNetwork(ssid: "HomeNet", bssid: "AA:BB:CC:00:00:02", signalPercent: 80, security: "WPA2", channel: 1, frequencyMHz: 2412),
            WiFiNetwork(ssid: #"Cafe:Free\Wifi"#, bssid: "AA:BB:CC:00:00:03", signalPercent: 42, security: "", channel: 36, frequencyMHz: 5180),
        ])
        XCTAssertEqual(networks[0].signalDBm, -60)
        XCTAssertEqual(try calls(), [[
            "-t", "-e", "yes", "-f", "IN-USE,BSSID,SSID,CHAN,FREQ,SIGNAL,SECURITY",
            "device", "wifi", "list", "--rescan", "yes", "ifname", "wlan0",
        ]])
    }

    func testConnectCreatesTheClientProfileAndWaits() throws {
        let backend = makeBackend()
        XCTAssertNoThrow(try backend.connect(ssid: "HomeNet", password: Secret("homenet-pass"), timeout: 30).get())
        XCTAssertEqual(try calls(), [
            ["connection", "delete", "meterext-client"],
            ["connection", "add", "type", "wifi", "ifname", "wlan0", "con-name", "meterext-client", "autoconnect", "yes",
             "connection.autoconnect-retries", "0", "ssid", "HomeNet", "wifi-sec.key-mgmt", "wpa-psk", "wifi-sec.psk", "homenet-pass"],
            ["--wait", "30", "connection", "up", "meterext-client"],
        ])
        let status = try backend.status()
        XCTAssertEqual(status, WiFiLinkStatus(state: .connected, ssid: "HomeNet", rssiDBm: -70, ipv4: "192.168.1.23", bssid: "AA:BB:CC:00:00:01"))
        XCTAssertEqual(try calls().suffix(2), [
            ["-t", "-e", "yes", "-f", "GENERAL.STATE,GENERAL.CONNECTION,IP4.ADDRESS", "device", "show", "wlan0"],
            ["-t", "-e", "yes", "-f", "IN-USE,BSSID,SSID,SIGNAL", "device", "wifi", "list", "--rescan", "no", "ifname", "wlan0"],
        ])
    }

    func testConnectToOpenNetworkSendsNoSecurity() throws {
        XCTAssertNoThrow(try makeBackend().connect(ssid: #"Cafe:Free\Wifi"#, password: nil, timeout: 5).get())
        XCTAssertEqual(try calls()[1], [
            "connection", "add", "type", "wifi", "ifname", "wlan0", "con-name", "meterext-client", "autoconnect", "yes",
            "connection.autoconnect-retries", "0", "ssid", #"Cafe:Free\Wifi"#,
        ])
    }

    func testFailuresAreReportedInPlainWordsAndLeaveNoProfile() throws {
        let backend = makeBackend()
        XCTAssertEqual(backend.connect(ssid: "HomeNet", password: Secret("wrong-pass"), timeout: 30).failureValue, .wrongPassword)
        XCTAssertEqual(try calls().last, ["connection", "delete", "meterext-client"])
        XCTAssertEqual(backend.connect(ssid: "Nowhere", password: Secret("whatever1"), timeout: 30).failureValue, .networkNotFound("Nowhere"))
        XCTAssertEqual(try backend.status().state, .disconnected)
        if case .failure(.invalidInput(let why)) = backend.connect(ssid: "HomeNet", password: Secret("short"), timeout: 30) {
            XCTAssertTrue(why.contains("psk"), why)
            XCTAssertFalse(why.contains("short"), why)
        } else {
            XCTFail("short password accepted")
        }
    }

    func testTimeout() throws {
        try setScenario { $0.replacingOccurrences(of: "\"mac\"", with: "\"hang_on_up\": true, \"mac\"") }
        XCTAssertEqual(makeBackend().connect(ssid: "HomeNet", password: Secret("homenet-pass"), timeout: 1).failureValue, .timeout(seconds: 1))
        XCTAssertEqual(WiFiConnectFailure.timeout(seconds: 1).description, "no connection within 1 seconds")
    }

    func testAccessPointCommands() throws {
        let backend = makeBackend()
        try backend.startAccessPoint(ssid: "meterextension:B1C2", password: Secret("welinkwmlink"))
        XCTAssertEqual(try calls(), [
            ["connection", "delete", "meterext-ap"],
            ["connection", "add", "type", "wifi", "ifname", "wlan0", "con-name", "meterext-ap", "autoconnect", "no",
             "ssid", "meterextension:B1C2", "mode", "ap", "802-11-wireless.band", "bg", "ipv4.method", "shared",
             "ipv4.addresses", "10.42.0.1/24", "wifi-sec.key-mgmt", "wpa-psk", "wifi-sec.proto", "rsn",
             "wifi-sec.pairwise", "ccmp", "wifi-sec.group", "ccmp", "wifi-sec.psk", "welinkwmlink"],
            ["--wait", "15", "connection", "up", "meterext-ap"],
        ])
        // The access point on wlan0 is not a client connection.
        XCTAssertEqual(try backend.status(), .disconnected)
        try backend.stopAccessPoint()
        try backend.stopAccessPoint()  // already down: not an error
        XCTAssertEqual(try calls().suffix(2), [["connection", "down", "meterext-ap"], ["connection", "down", "meterext-ap"]])
        XCTAssertFalse(backend.supportsConcurrentAPAndClient)
        XCTAssertTrue(makeBackend(.init(accessPointInterface: "uap0")).supportsConcurrentAPAndClient)
    }

    func testMissingNmcliIsAClearError() {
        let backend = NetworkManagerBackend(environment: ["PATH=/nonexistent"])
        XCTAssertThrowsError(try backend.scan()) { XCTAssertEqual("\($0)", "nmcli not found (is NetworkManager installed?)") }
        XCTAssertEqual(backend.connect(ssid: "x", password: nil, timeout: 1).failureValue, .backend("nmcli not found (is NetworkManager installed?)"))
    }
}

final class SubprocessTests: XCTestCase {
    func testCapturesOutputAndExitCode() throws {
        let r = try Subprocess().run("sh", ["-c", "echo out; echo err >&2; exit 3"], timeout: 10)
        XCTAssertEqual(r, ProcessResult(exitCode: 3, stdout: "out\n", stderr: "err\n", timedOut: false))
    }

    func testKillsAfterTheDeadline() throws {
        let start = MonotonicClock.nowSeconds()
        let r = try Subprocess().run("sh", ["-c", "echo started; exec sleep 30"], timeout: 0.5)
        XCTAssertTrue(r.timedOut)
        XCTAssertNil(r.exitCode)
        XCTAssertEqual(r.stdout, "started\n")
        XCTAssertLessThan(MonotonicClock.nowSeconds() - start, 5)
    }

    func testChildThatClosesItsPipesStillHonoursTheDeadline() throws {
        let r = try Subprocess().run("sh", ["-c", "exec >/dev/null 2>&1; sleep 30"], timeout: 0.5)
        XCTAssertTrue(r.timedOut)
    }
}
