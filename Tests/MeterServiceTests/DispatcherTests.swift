import FoundationEssentials
import KPM33B
@testable import MeterService
import MeterTestSupport
import XCTest

final class DispatcherTests: XCTestCase {
    let link = FakeMeterLink(Fixture.snapshot())

    func send(_ body: String, api: MeterAPI? = nil) async -> APIResponse {
        await (api ?? Fixture.api(link: link)).dispatcher().handle(body: Array(body.utf8))
    }

    struct ErrorDTO: Decodable {
        var result: String
        var error: String
        var message: String?
        var id: RequestID?
    }

    func testIDIsEchoedExactly() async {
        for (sent, echoed) in [(#""123""#, #""123""#), ("0", "0"), ("12.5", "12.5"), ("-7", "-7"),
                               (#""a\"b""#, #""a\"b""#), ("18446744073709551615", "18446744073709551615")] {
            let r = await send(#"{"cmd":"meter_factreset","id":"# + sent + "}")
            XCTAssertEqual(text(r.body), #"{"result":"OK","id":"# + echoed + "}", sent)
        }
        let none = await send(#"{"cmd":"meter_factreset"}"#)
        XCTAssertEqual(text(none.body), #"{"result":"OK"}"#)
    }

    func testWrongIDTypesAreRejected() async throws {
        for id in ["{}", "[1]", "true", "null"] {
            let r = await send(#"{"cmd":"system_status","id":"# + id + "}")
            XCTAssertEqual(r.status, 400, id)
            let e = try decode(ErrorDTO.self, r.body)
            XCTAssertEqual(e.result, "ERROR")
            XCTAssertEqual(e.error, "wrong_type", id)
        }
    }

    func testEnvelopeErrors() async throws {
        let cases: [(String, Int, String)] = [
            (#"{"cmd":"meter_reading""#, 400, "invalid_json"),
            ("", 400, "invalid_json"),
            ("\u{01}\u{02}\u{ff}junk", 400, "invalid_json"),
            (#"["meter_reading"]"#, 400, "invalid_json"),
            (#"{"id":"1"}"#, 400, "missing_cmd"),
            (#"{"cmd":5,"id":"9"}"#, 400, "wrong_type"),
            (#"{"cmd":null}"#, 400, "wrong_type"),
        ]
        for (body, status, code) in cases {
            let r = await send(body)
            XCTAssertEqual(r.status, status, body)
            let e = try decode(ErrorDTO.self, r.body)
            XCTAssertEqual(e.error, code, body)
            XCTAssertFalse(e.message?.isEmpty ?? true)
        }
        // The id is still echoed when only `cmd` was wrong.
        let wrongCmd = await send(#"{"cmd":5,"id":"9"}"#)
        XCTAssertEqual(try decode(ErrorDTO.self, wrongCmd.body).id, .string("9"))
    }

    func testUnknownCommandKeepsTheDescriptionsSpelling() async throws {
        let r = await send(#"{"cmd":"coffee","id":"123"}"#)
        XCTAssertEqual(r.status, 200)
        let e = try decode(ErrorDTO.self, r.body)
        XCTAssertEqual(e.error, "unkown_cmd")
        XCTAssertEqual(e.result, "ERROR")
        XCTAssertEqual(e.id, .string("123"))
        XCTAssertTrue(text(r.body).hasSuffix(#""result":"ERROR","id":"123"}"#), text(r.body))
    }

    func testNotAvailableCommandsAreNeverFakeOK() async throws {
        for cmd in MeterAPI.notAvailableCommands {
            let r = await send(#"{"cmd":""# + cmd + #"","id":1}"#)
            XCTAssertEqual(r.status, 501, cmd)
            let e = try decode(ErrorDTO.self, r.body)
            XCTAssertEqual(e.error, "not_available")
            XCTAssertEqual(e.id, .integer(1))
        }
    }

    func testRegistryCanReplaceAStub() async throws {
        let api = Fixture.api(link: link)
        var registry = api.registry()
        registry.register("wifi_status", sync: { _ in .ok(["ssid": "home", "result": "OK"]) })
        let r = await api.dispatcher(registry: registry).handle(body: Array(#"{"cmd":"wifi_status","id":"5"}"#.utf8))
        XCTAssertEqual(text(r.body), #"{"result":"OK","ssid":"home","id":"5"}"#)
    }

    func testSetKeyValidatesStoresAndNeverEchoes() async throws {
        let settings = InMemoryDeviceSettings()
        let api = Fixture.api(link: link, settings: settings)
        let key = "00112233445566778899AABBCCDDEEFF"
        let ok = await send(#"{"cmd":"meter_setkey","key":""# + key + #"","id":"123"}"#, api: api)
        XCTAssertEqual(text(ok.body), #"{"result":"OK","id":"123"}"#)
        XCTAssertEqual(settings.meterKey, key.lowercased())

        for bad in [#""xxxxx""#, #""00112233445566778899AABBCCDDEEFG""#, #""00112233445566778899AABBCCDDEEFF00""#, "42"] {
            let r = await send(#"{"cmd":"meter_setkey","key":"# + bad + "}", api: api)
            XCTAssertEqual(r.status, 400, bad)
            XCTAssertEqual(try decode(ErrorDTO.self, r.body).error, "invalid_key")
            XCTAssertFalse(text(r.body).contains(String(bad.filter { $0 != "\"" })), "key echoed: \(text(r.body))")
        }
        let missing = await send(#"{"cmd":"meter_setkey"}"#, api: api)
        XCTAssertEqual(try decode(ErrorDTO.self, missing.body).error, "invalid_key")
        XCTAssertEqual(settings.meterKey, key.lowercased(), "bad keys must not overwrite the stored one")
    }

    func testRestartAndFactoryResetActOnlyAfterTheReply() async {
        let settings = InMemoryDeviceSettings()
        let system = RecordingSystemControl()
        let api = Fixture.api(link: link, settings: settings, system: system)
        let restart = await send(#"{"cmd":"system_restart","id":"123"}"#, api: api)
        let reset = await send(#"{"cmd":"meter_factreset","id":"123"}"#, api: api)
        XCTAssertEqual(text(restart.body), #"{"result":"OK","id":"123"}"#)
        XCTAssertEqual(system.restarts, 0, "the dispatcher must not act before the reply is written")
        XCTAssertEqual(settings.factoryResets, 0)
        restart.afterReply?()
        reset.afterReply?()
        XCTAssertEqual(system.restarts, 1)
        XCTAssertEqual(settings.factoryResets, 1)
    }

    func testSystemStatus() async throws {
        struct Status: Decodable {
            var model: String, mac: String, uptime: String, line: String, result: String, meterid: String
            var swVersion: String, hwVersion: String, sysTS: String, meterLink: String, pollCycleMS: String
            var lastReadingTS: String, linkErrors: [String: String]
            enum CodingKeys: String, CodingKey {
                case model, mac, uptime, line, result, meterid, swVersion = "sw-version", hwVersion = "hw-version"
                case sysTS = "sys-ts", meterLink = "meter_link", pollCycleMS = "poll_cycle_ms"
                case lastReadingTS = "last_reading_ts", linkErrors = "link_errors"
            }
        }
        let s = try decode(Status.self, await send(#"{"cmd":"system_status","id":"123"}"#).body)
        XCTAssertEqual(s.model, DeviceIdentity.defaultModel)
        XCTAssertEqual(s.swVersion, "1.2.3")
        XCTAssertEqual(s.hwVersion, "rpi-test")
        XCTAssertEqual(s.mac, "b8:27:eb:01:02:03")
        XCTAssertEqual(s.sysTS, "1763719999")
        XCTAssertEqual(s.meterLink, "online")
        XCTAssertEqual(s.line, "9600 8E1, address 1")
        XCTAssertEqual(s.pollCycleMS, "812")
        XCTAssertEqual(s.lastReadingTS, String(Fixture.basicReadAt))
        XCTAssertEqual(s.linkErrors["timeouts"], "3")
        XCTAssertEqual(s.linkErrors["transactions"], "42")
        XCTAssertEqual(s.meterid, Fixture.serial)
    }

    func testIPInfoFieldNames() async throws {
        let r = await send(#"{"cmd":"get_ip_info","id":"123"}"#)
        XCTAssertEqual(text(r.body),
                       #"{"GW":"192.168.0.1","IP":"192.168.0.158","Net Mask":"255.255.255.0","interface":"wlan0","result":"OK","id":"123"}"#)
    }

    func testRelayCommands() async throws {
        struct Relay: Decodable {
            var state: String; var phases: [String: String]?; var phases_note: String?; var result: String
        }
        let off = await send(#"{"cmd":"relay_set","state":"off"}"#)
        XCTAssertEqual(off.status, 200, text(off.body))
        XCTAssertEqual(try decode(Relay.self, off.body).state, "off")
        let status = await send(#"{"cmd":"relay_status"}"#)
        XCTAssertEqual(try decode(Relay.self, status.body).phases, ["A": "off", "B": "off", "C": "off"])

        link.setRelayResult(.success(RelayState(bits: 3)))
        // The meter still reports relay 1 closed after an "off" command (local control mode).
        let refused = await send(#"{"cmd":"relay_set","state":"off"}"#)
        XCTAssertEqual(try decode(ErrorDTO.self, refused.body).error, "relay_mismatch")
        let status2 = try decode(Relay.self, (await send(#"{"cmd":"relay_status"}"#)).body)
        XCTAssertEqual(status2.state, "on")
        // 0x03 disagrees with itself (relay closed, phase C "open"): per-phase bits are not believed.
        XCTAssertNil(status2.phases)
        XCTAssertEqual(status2.phases_note, "per-phase status is not reported by this meter")

        // The manual's worked example answers 0x01 for "closed": phases B and C must not show "off".
        link.setRelayResult(.success(RelayState(bits: 1)))
        let on = try decode(Relay.self, (await send(#"{"cmd":"relay_set","state":"on"}"#)).body)
        XCTAssertEqual(on.state, "on")
        XCTAssertNil(on.phases)
        XCTAssertNotNil(on.phases_note)
        link.setRelayResult(.success(RelayState(bits: 7)))
        let all = try decode(Relay.self, (await send(#"{"cmd":"relay_set","state":"on"}"#)).body)
        XCTAssertEqual(all.phases, ["A": "on", "B": "on", "C": "on"])
        XCTAssertNil(all.phases_note)

        link.setRelayResult(.failure(.init(description: "timeout after 3 retries")))
        let failed = await send(#"{"cmd":"relay_set","state":"on"}"#)
        XCTAssertEqual(failed.status, 502)
        XCTAssertTrue(try decode(ErrorDTO.self, failed.body).message!.contains("timeout after 3 retries"))

        let bad = await send(#"{"cmd":"relay_set","state":"maybe"}"#)
        XCTAssertEqual(try decode(ErrorDTO.self, bad.body).error, "invalid_param")
    }

    func testMeterInfo() async throws {
        struct Info: Decodable {
            var meterid: String, clock: String, control_mode: String, load_threshold_kw: String, line: String
        }
        let i = try decode(Info.self, await send(#"{"cmd":"meter_info"}"#).body)
        XCTAssertEqual(i.meterid, Fixture.serial)
        XCTAssertEqual(i.clock, "2025-11-21 10:04:05")
        XCTAssertEqual(i.control_mode, "remote")
        XCTAssertEqual(i.load_threshold_kw, "7")
    }
}
