import FoundationEssentials
import KPM33B
@testable import MeterService
import MeterTestSupport
import XCTest

/// Issue 18: the `meter_reading` reply is encoded lazily, once per snapshot that a client asks for, and never for a
/// snapshot nobody asked about.
final class ReadingCacheTests: XCTestCase {
    func testEncodesOnlyOnRequestAndOncePerSnapshot() async {
        let link = FakeMeterLink(Fixture.snapshot())
        let api = Fixture.api(link: link)
        let dispatcher = api.dispatcher()
        // The poll loop publishes snapshot after snapshot; nobody asks.
        for _ in 0..<50 { link.update { $0.publishedAt += 1 } }
        XCTAssertEqual(api.meterReadingEncodeCount, 0, "nothing is encoded while nobody asks")
        let first = await dispatcher.handle(body: Array(#"{"cmd":"meter_reading"}"#.utf8))
        XCTAssertEqual(api.meterReadingEncodeCount, 1)
        for id in 0..<20 {
            let again = await dispatcher.handle(body: Array(#"{"cmd":"meter_reading","id":\#(id)}"#.utf8))
            XCTAssertEqual(again.status, 200)
        }
        XCTAssertEqual(api.meterReadingEncodeCount, 1, "same snapshot: the first encoding is shared")
        let same = await dispatcher.handle(body: Array(#"{"cmd":"meter_reading"}"#.utf8))
        XCTAssertEqual(same.body, first.body)
        for _ in 0..<10 { link.update { $0.publishedAt += 1 } }
        XCTAssertEqual(api.meterReadingEncodeCount, 1, "new snapshots are not encoded before a request")
        _ = await dispatcher.handle(body: Array(#"{"cmd":"meter_reading"}"#.utf8))
        XCTAssertEqual(api.meterReadingEncodeCount, 2, "the first request after a new snapshot encodes it")
    }

    func testVersionFollowsGenerationAndStatusWithoutEncoding() {
        let link = FakeMeterLink(Fixture.snapshot())
        let api = Fixture.api(link: link)
        let v1 = api.meterReadingVersion()
        XCTAssertEqual(api.meterReadingVersion(), v1)
        link.update { _ in }
        XCTAssertNotEqual(api.meterReadingVersion(), v1)
        XCTAssertEqual(api.meterReadingEncodeCount, 0)
    }
}
