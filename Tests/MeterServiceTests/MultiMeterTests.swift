import FoundationEssentials
import KPM33B
@testable import MeterService
import MeterTestSupport
import XCTest

/// A fake link that knows its address (as `MeterPoller` does).
final class AddressedLink: MeterLink, @unchecked Sendable {
    let inner: FakeMeterLink
    let address: UInt8
    init(_ snapshot: MeterSnapshot, address: UInt8) { inner = FakeMeterLink(snapshot); self.address = address }
    func snapshot() -> MeterSnapshot { inner.snapshot() }
    func setRelay(closed: Bool) async throws -> RelayState { try await inner.setRelay(closed: closed) }
    var lineDescription: String { "9600 8E1, address \(address)" }
    var meterAddress: UInt8? { address }
}

/// Issue 17: several meters behind one API.
final class MultiMeterTests: XCTestCase {
    func snapshot(serial: String, health: LinkHealth = .online) -> MeterSnapshot {
        var s = Fixture.snapshot(health: health)
        s.parameters?.serialNumber = serial
        return s
    }

    func api(_ links: [any MeterLink]) -> MeterAPI {
        MeterAPI(link: links[0], moreLinks: Array(links.dropFirst()), settings: InMemoryDeviceSettings(),
                 system: RecordingSystemControl(),
                 network: FixedNetworkInfo(info: nil, mac: "b8:27:eb:01:02:03"),
                 identity: DeviceIdentity(softwareVersion: "1", hardwareVersion: "t"),
                 calendar: UTCSettlementCalendar(), now: { 1_763_719_999 })
    }

    func send(_ api: MeterAPI, _ body: String) async -> APIResponse {
        await api.dispatcher().handle(body: Array(body.utf8))
    }

    func testOneElementPerMeterInOrderAndTheFirstUnchanged() async throws {
        let one = AddressedLink(snapshot(serial: "33B0000000001"), address: 1)
        let two = AddressedLink(snapshot(serial: "33B0000000002", health: .offline), address: 2)
        let three = AddressedLink(snapshot(serial: "33B0000000003"), address: 3)
        let single = await send(api([one]), #"{"cmd":"meter_reading"}"#)
        let multi = await send(api([one, two, three]), #"{"cmd":"meter_reading"}"#)
        let r = try decode(ReadingDTO.self, multi.body)
        XCTAssertEqual(r.meter.map(\.meterid), ["33B0000000001", "33B0000000002", "33B0000000003"])
        XCTAssertEqual(r.meter.map { $0.status ?? "" }, ["online", "offline", "online"])
        XCTAssertTrue(r.meter[1].data.isEmpty)
        XCTAssertFalse(r.meter[2].data.isEmpty)
        // Index 0 is exactly the single-meter element.
        let s = try decode(ReadingDTO.self, single.body)
        XCTAssertEqual(s.meter.count, 1)
        XCTAssertEqual(s.meter[0].data.map(\.OBIS), r.meter[0].data.map(\.OBIS))
        XCTAssertEqual(s.meter[0].data.map { $0.entry[0].val }, r.meter[0].data.map { $0.entry[0].val })
    }

    func testMeterParameterSelectsByIdOrAddress() async throws {
        let links = [AddressedLink(snapshot(serial: "33B0000000001"), address: 1),
                     AddressedLink(snapshot(serial: "33B0000000007"), address: 7)]
        let api = api(links)
        struct Status: Decodable { var meterid: String; var line: String }
        for (body, want) in [(#"{"cmd":"system_status"}"#, "33B0000000001"),
                             (#"{"cmd":"system_status","meter":7}"#, "33B0000000007"),
                             (#"{"cmd":"system_status","meter":"7"}"#, "33B0000000007"),
                             (#"{"cmd":"system_status","meter":"33B0000000007"}"#, "33B0000000007"),
                             (#"{"cmd":"system_status","meter":1}"#, "33B0000000001")] {
            let r = await send(api, body)
            XCTAssertEqual(try decode(Status.self, r.body).meterid, want, body)
        }
        for bad in [#""meter":2"#, #""meter":"33B0000000009""#, #""meter":true"#, #""meter":-1"#] {
            for cmd in ["system_status", "relay_status", "relay_set", "meter_info"] {
                let r = await send(api, #"{"cmd":""# + cmd + #"","state":"on","# + bad + "}")
                XCTAssertEqual(r.status, 400, cmd + bad)
                XCTAssertTrue(text(r.body).contains("invalid_param"), text(r.body))
            }
        }
        XCTAssertEqual(api.meterIndex(named: "7"), 1)
        XCTAssertNil(api.meterIndex(named: "8"))
    }

    func testJoinKeepsEachBody() {
        let a = Array(#"{"meter":[{"a":1}],"result":"OK"}"#.utf8), b = Array(#"{"meter":[{"b":2}],"result":"OK"}"#.utf8)
        XCTAssertEqual(text(MeterAPI.joinMeterBodies([a, b])), #"{"meter":[{"a":1},{"b":2}],"result":"OK"}"#)
        let broken = Array(#"{"result":"ERROR"}"#.utf8)
        XCTAssertEqual(MeterAPI.joinMeterBodies([a, broken]), broken)
    }
}
