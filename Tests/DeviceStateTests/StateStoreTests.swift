import Platform
import FoundationEssentials
import Glibc
import XCTest

@testable import DeviceState

final class StateStoreTests: XCTestCase {
    func testFirstStartWritesDefaultsWithNewTokenAndPrivateMode() throws {
        let dir = makeTemporaryDirectory(self) + "/nested/state"
        let store = try StateStore(directory: dir)
        XCTAssertNil(store.config.wifi)
        XCTAssertEqual(store.config.accessPoint.timeoutSeconds, 600)
        XCTAssertTrue(store.config.tokenRequired, "commands that change the board need the token by default")
        let token = store.config.apiToken.revealed
        XCTAssertEqual(token.count, 64)
        XCTAssertTrue(token.allSatisfy { "0123456789abcdef".contains($0) })
        XCTAssertEqual(fileMode(store.configPath), 0o600)
        XCTAssertEqual(fileMode(store.statePath), 0o600)
        XCTAssertTrue(store.loadWarnings.contains("generated a new API token"))

        // A second start keeps the token and reports nothing.
        let again = try StateStore(directory: dir)
        XCTAssertEqual(again.config.apiToken, store.config.apiToken)
        XCTAssertEqual(again.loadWarnings, [])
        XCTAssertNotEqual(try StateStore.generateToken(), try StateStore.generateToken())
    }

    func testUpdatesPersistAcrossRestarts() throws {
        let dir = makeTemporaryDirectory(self)
        let store = try StateStore(directory: dir)
        try store.updateConfig {
            $0.wifi = WiFiClientConfig(ssid: "HomeNet", password: Secret("homenet-pass"), mode: .staAP)
            $0.accessPoint.password = Secret("installer-pw")
            $0.accessPoint.timeoutSeconds = 120
            $0.meterKey = Secret("00112233445566778899AABBCCDDEEFF")
            $0.tokenRequired = true
        }
        try store.updateState { $0.lastWiFiFailure = "wrong password" }
        let reloaded = try StateStore(directory: dir)
        XCTAssertEqual(reloaded.config, store.config)
        XCTAssertEqual(reloaded.config.wifi?.password?.revealed, "homenet-pass")
        XCTAssertEqual(reloaded.config.accessPoint.effectivePassword.revealed, "installer-pw")
        XCTAssertEqual(reloaded.state.lastWiFiFailure, "wrong password")
        XCTAssertEqual(reloaded.state.startCount, 0)
        let json = try XCTUnwrap(try readText(store.configPath))
        XCTAssertTrue(json.contains("\"version\" : 1"), json)
    }

    func testMalformedFileIsSetAsideAndDefaultsLoad() throws {
        let dir = makeTemporaryDirectory(self)
        try writeText("{\"version\": 1, \"apiToken\": \"abc\", \"wifi\": {\"ssid\": 5", to: dir + "/config.json")
        try writeText("not json at all", to: dir + "/state.json")
        let store = try StateStore(directory: dir)
        XCTAssertNil(store.config.wifi)
        XCTAssertEqual(store.config.apiToken.revealed.count, 64)
        XCTAssertTrue(store.loadWarnings.contains { $0.contains("config.json is malformed") }, "\(store.loadWarnings)")
        XCTAssertTrue(store.loadWarnings.contains { $0.contains("state.json is malformed") }, "\(store.loadWarnings)")
        let listing = try XCTUnwrap(try Subprocess().run("ls", ["-a", .plain(dir)], timeout: 5)).stdout
        XCTAssertTrue(listing.contains("config.json.corrupt-"), listing)
        XCTAssertTrue(listing.contains("state.json.corrupt-"), listing)
        // The fresh files are valid again.
        XCTAssertEqual(try StateStore(directory: dir).loadWarnings, [])
    }

    func testOlderFileWithMissingKeysLoadsWithDefaults() throws {
        let dir = makeTemporaryDirectory(self)
        try writeText(
            #"{"version": 1, "apiToken": "feed", "wifi": {"ssid": "Old:Net", "mode": "sta"}}"#, to: dir + "/config.json")
        let store = try StateStore(directory: dir)
        XCTAssertEqual(store.loadWarnings, [])
        XCTAssertEqual(store.config.wifi, WiFiClientConfig(ssid: "Old:Net", password: nil, mode: .sta))
        XCTAssertEqual(store.config.apiToken.revealed, "feed")
        XCTAssertEqual(store.config.accessPoint, AccessPointSettings())
    }

    func testLeftoverTemporaryFilesAreRemoved() throws {
        let dir = makeTemporaryDirectory(self)
        try writeText("half", to: dir + "/.config.json.tmp-AbC123")
        try writeText("keep", to: dir + "/other.txt")
        _ = try StateStore(directory: dir)
        XCTAssertNil(try readText(dir + "/.config.json.tmp-AbC123"))
        XCTAssertEqual(try readText(dir + "/other.txt"), "keep")
    }

    func testSecretsAreRedactedInEveryDisplayForm() throws {
        let dir = makeTemporaryDirectory(self)
        let store = try StateStore(directory: dir)
        try store.updateConfig {
            $0.wifi = WiFiClientConfig(ssid: "HomeNet", password: Secret("hunter2-wifi"))
            $0.meterKey = Secret("meterkey-0011")
        }
        let config = store.config
        var dumped = ""
        dump(config, to: &dumped)
        let renderings = [
            "\(config)", String(describing: config), String(reflecting: config), dumped,
            "\(config.wifi!)", "\(config.wifi!.password!)", String(reflecting: config.meterKey!),
            "\(CommandArgument.secret(config.apiToken))",
        ]
        for text in renderings {
            XCTAssertFalse(text.contains("hunter2-wifi"), text)
            XCTAssertFalse(text.contains("meterkey-0011"), text)
            XCTAssertFalse(text.contains(config.apiToken.revealed), text)
        }
        XCTAssertTrue("\(config.wifi!)".contains("HomeNet"))
        XCTAssertEqual("\(config.meterKey!)", "<redacted>")
    }

    func testFactoryResetForgetsEverythingAndReplacesTheToken() throws {
        let dir = makeTemporaryDirectory(self)
        let store = try StateStore(directory: dir)
        let oldToken = store.config.apiToken
        try store.updateConfig {
            $0.wifi = WiFiClientConfig(ssid: "HomeNet", password: Secret("homenet-pass"))
            $0.meterKey = Secret("k")
            $0.accessPoint.timeoutSeconds = 60
            $0.tokenRequired = false
        }
        try store.updateState { $0.startCount = 7; $0.lastConnectedSSID = "HomeNet" }
        try store.factoryReset()
        let reloaded = try StateStore(directory: dir)
        for s in [store, reloaded] {
            XCTAssertNil(s.config.wifi)
            XCTAssertNil(s.config.meterKey)
            XCTAssertEqual(s.config.accessPoint, AccessPointSettings())
            XCTAssertTrue(s.config.tokenRequired, "a reset restores the default: token required")
            XCTAssertNotEqual(s.config.apiToken, oldToken)
            XCTAssertNil(s.state.lastConnectedSSID)
            XCTAssertEqual(s.state.startCount, 7)
        }
    }

    func testTokenCheckOnlyWhenRequired() throws {
        let store = try StateStore(directory: makeTemporaryDirectory(self))
        let token = store.config.apiToken.revealed
        try store.updateConfig { $0.tokenRequired = false }
        XCTAssertTrue(store.authorizes(token: nil))
        try store.updateConfig { $0.tokenRequired = true }
        XCTAssertFalse(store.authorizes(token: nil))
        XCTAssertFalse(store.authorizes(token: ""))
        XCTAssertFalse(store.authorizes(token: String(token.dropLast()) + "x"))
        XCTAssertFalse(store.authorizes(token: token + "0"))
        XCTAssertTrue(store.authorizes(token: token))
    }

    func testFailedWriteLeavesMemoryAndFileUnchanged() throws {
        let dir = makeTemporaryDirectory(self)
        let store = try StateStore(directory: dir)
        chmod(dir, 0o500)
        defer { chmod(dir, 0o700) }
        // Root ignores directory permissions; only meaningful as an unprivileged user.
        if getuid() == 0 {
            XCTAssertThrowsError(try store.updateConfig {
                $0.tokenRequired = false
                throw SystemError("test", errno: EIO)
            })
        } else {
            XCTAssertThrowsError(try store.updateConfig { $0.tokenRequired = false })
        }
        XCTAssertTrue(store.config.tokenRequired, "the failed write must not change memory")
        XCTAssertTrue(try StateStore(directory: dir).config.tokenRequired, "nor the file")
    }
}
