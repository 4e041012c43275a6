import FoundationEssentials
import XCTest

@testable import DeviceState

/// `iw` against Fixtures/iw (records its command lines) with fixture text of `iw phy` output, and the NetworkManager
/// back end on a concurrent radio against Fixtures/nmcli (issue 13).
final class WiFiIWRadioTests: XCTestCase {
    var dir = ""

    override func setUpWithError() throws {
        dir = makeTemporaryDirectory(self)
        try writeText("{\"mac\": \"dc:a6:32:0a:b1:c2\", \"networks\": [{\"ssid\": \"HomeNet\", \"bssid\": \"AA:BB:CC:00:00:01\", \"chan\": 6, \"freq\": 2437, \"signal\": 60, \"security\": \"WPA2\", \"password\": \"homenet-pass\"}]}", to: dir + "/scenario.json")
    }

    var environment: [String] { ["PATH=\(fixturesDirectory):/usr/bin:/bin", "FAKE_IW_DIR=\(dir)", "FAKE_NMCLI_DIR=\(dir)"] }

    func radio(phy fixture: String) throws -> IWRadio {
        try writeText(try readText(fixturesDirectory + "/" + fixture)!, to: dir + "/phy.txt")
        return IWRadio(environment: environment)
    }

    func calls(_ name: String = "calls.log") throws -> [[String]] {
        guard let text = try readText(dir + "/" + name) else { return [] }
        return try text.split(separator: "\n").map { try JSONDecoder().decode([String].self, from: Data($0.utf8)) }
    }

    func testParsesThePi5Combinations() throws {
        let text = try readText(fixturesDirectory + "/iw-phy-brcmfmac-pi5.txt")!
        let combos = InterfaceCombination.parse(phyInfo: text)
        XCTAssertEqual(combos.count, 2)
        XCTAssertEqual(combos[0].limits.map(\.types), [["managed"], ["P2P-device"], ["P2P-client", "P2P-GO"]])
        XCTAssertEqual(combos[0].total, 3)
        XCTAssertEqual(combos[0].channels, 2)
        XCTAssertFalse(combos[0].allows(["managed", "AP"]))
        XCTAssertTrue(combos[1].allows(["managed", "AP"]))
        XCTAssertEqual(combos[1].channels, 1)
        // Pi 3/4/Zero 2 W (field facts), and a shared slot that cannot hold both.
        XCTAssertTrue(InterfaceCombination.parseEntry("#{ managed } <= 1, #{ AP } <= 1, total <= 2, #channels <= 1")!
            .allows(["managed", "AP"]))
        XCTAssertFalse(InterfaceCombination.parseEntry("#{ managed, AP } <= 1, total <= 2, #channels <= 1")!
            .allows(["managed", "AP"]))
        XCTAssertFalse(InterfaceCombination.parseEntry("#{ managed } <= 1, #{ AP } <= 1, total <= 1")!
            .allows(["managed", "AP"]))
    }

    func testConcurrentRadioGetsUap0() throws {
        let radio = try radio(phy: "iw-phy-brcmfmac-pi5.txt")
        XCTAssertEqual(try radio.capability(), .concurrent(sameChannel: true))
        XCTAssertTrue(try radio.ensureAccessPointInterface())
        XCTAssertFalse(try radio.ensureAccessPointInterface(), "already there")
        XCTAssertEqual(try calls(), [
            ["dev", "wlan0", "info"], ["phy", "phy0", "info"],
            ["dev", "uap0", "info"], ["dev", "wlan0", "interface", "add", "uap0", "type", "__ap"],
            ["dev", "uap0", "info"],
        ])
        XCTAssertTrue(NetworkManagerBackend.detectedConfiguration(iw: radio).0.accessPointInterface == "uap0")
    }

    func testSingleRadioSaysSoAndAddsNothing() throws {
        let radio = try radio(phy: "iw-phy-single-radio.txt")
        XCTAssertEqual(try radio.capability(), .single)
        let (configuration, note) = NetworkManagerBackend.detectedConfiguration(iw: radio)
        XCTAssertNil(configuration.accessPointInterface)
        XCTAssertTrue(note.contains("single radio"), note)
        XCTAssertFalse(try calls().contains { $0.contains("add") })
    }

    func testRadioThatDisappearsOrRefusesIsAClearError() throws {
        let radio = try radio(phy: "iw-phy-brcmfmac-pi5.txt")
        try writeText("eth0\n", to: dir + "/interfaces")
        XCTAssertThrowsError(try radio.capability()) { XCTAssertTrue("\($0)".contains("no WiFi interface wlan0"), "\($0)") }
        try writeText("wlan0\n", to: dir + "/interfaces")
        try writeText("", to: dir + "/fail_add")
        XCTAssertThrowsError(try radio.ensureAccessPointInterface()) {
            XCTAssertEqual("\($0)", "cannot add the access point interface uap0: command failed: Operation not permitted (-1)")
        }
        XCTAssertThrowsError(try IWRadio(environment: ["PATH=/nonexistent"]).phy()) {
            XCTAssertEqual("\($0)", "iw not found (install the iw package)")
        }
    }

    /// The AP on uap0 on the client's channel; the client on wlan0 stays connected.
    func testAccessPointBesideTheClientOnItsChannel() throws {
        let backend = NetworkManagerBackend(configuration: .init(accessPointInterface: "uap0"), environment: environment)
        XCTAssertNoThrow(try backend.connect(ssid: "HomeNet", password: Secret("homenet-pass"), timeout: 5).get())
        try writeText("", to: dir + "/calls.log")
        try backend.startAccessPoint(ssid: "meterextension:B1C2", password: Secret("welinkwmlink"))
        XCTAssertEqual(try calls(), [
            ["connection", "delete", "meterext-ap"],
            ["-t", "-e", "yes", "-f", "IN-USE,CHAN", "device", "wifi", "list", "--rescan", "no", "ifname", "wlan0"],
            ["connection", "add", "type", "wifi", "ifname", "uap0", "con-name", "meterext-ap", "autoconnect", "no",
             "ssid", "meterextension:B1C2", "mode", "ap", "802-11-wireless.band", "bg", "802-11-wireless.channel", "6",
             "ipv4.method", "shared", "ipv4.addresses", "10.42.0.1/24", "wifi-sec.key-mgmt", "wpa-psk",
             "wifi-sec.proto", "rsn", "wifi-sec.pairwise", "ccmp", "wifi-sec.group", "ccmp", "wifi-sec.psk", "welinkwmlink"],
            ["--wait", "15", "connection", "up", "meterext-ap"],
        ])
        let link = try backend.status()
        XCTAssertEqual(link.state, .connected)
        XCTAssertEqual(link.ssid, "HomeNet")
        try backend.stopAccessPoint()
        XCTAssertEqual(try backend.status().ssid, "HomeNet")
    }
}
