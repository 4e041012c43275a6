import Synchronization
import XCTest
@testable import BoardSupport

final class RecordingLine: OutputLine {
    struct Failure: Error {}
    private let state = Mutex<(writes: [Bool], failNext: Bool)>(([], false))
    func set(_ on: Bool) throws {
        try state.withLock {
            if $0.failNext { $0.failNext = false; throw Failure() }
            $0.writes.append(on)
        }
    }
    var writes: [Bool] { state.withLock { $0.writes } }
    func failNextWrite() { state.withLock { $0.failNext = true } }
}

final class StatusLEDTests: XCTestCase {
    /// Samples a pattern every 50 ms over one period as a string of 1/0.
    func sample(_ state: StatusLEDState, period: Int, offset: Duration = .zero) -> String {
        stride(from: 0, to: period, by: 50).map {
            BlinkPattern.isOn(state, at: offset + .milliseconds($0)) ? "1" : "0"
        }.joined()
    }

    func testPatternsAreDistinct() {
        XCTAssertEqual(sample(.setup, period: 400), "11001100")
        XCTAssertEqual(sample(.meterOffline, period: 1500), "111000111" + String(repeating: "0", count: 21))
        let online = sample(.meterOnline, period: 3000)
        XCTAssertEqual(online, String(repeating: "1", count: 58) + "00")
        XCTAssertEqual(sample(.off, period: 3000), String(repeating: "0", count: 60))
        let all = StatusLEDState.allCases.map { sample($0, period: 3000) }
        XCTAssertEqual(Set(all).count, all.count)
    }

    func testPhaseIsTimeModuloPeriodIncludingLargeAndNegativeTimes() {
        let day = Duration.seconds(86_400)  // a multiple of every period
        XCTAssertEqual(sample(.meterOffline, period: 1500, offset: day), sample(.meterOffline, period: 1500))
        XCTAssertTrue(BlinkPattern.isOn(.setup, at: .milliseconds(-150)))  // phase 50 ms
        XCTAssertFalse(BlinkPattern.isOn(.setup, at: .milliseconds(-50)))  // phase 150 ms
    }

    func testTheLEDShowsOnlineOnlyWhenEveryMeterAnswers() {
        XCTAssertEqual(StatusLEDState.showing(accessPointOpen: false, answering: 1, of: 1), .meterOnline)
        XCTAssertEqual(StatusLEDState.showing(accessPointOpen: false, answering: 3, of: 3), .meterOnline)
        XCTAssertEqual(StatusLEDState.showing(accessPointOpen: false, answering: 2, of: 3), .meterOffline)
        XCTAssertEqual(StatusLEDState.showing(accessPointOpen: false, answering: 0, of: 1), .meterOffline)
        XCTAssertEqual(StatusLEDState.showing(accessPointOpen: false, answering: 0, of: 0), .meterOffline)
        XCTAssertEqual(StatusLEDState.showing(accessPointOpen: true, answering: 1, of: 2), .setup)
    }

    func testDriverWritesOnlyChangesAndRetriesAfterAFailedWrite() {
        let clock = ManualClock()  // starts at 1000 s: phase 0 of every pattern
        let line = RecordingLine()
        let driver = StatusLEDDriver(line: line, initialState: .setup, now: clock.now)
        driver.tick()
        driver.tick()
        XCTAssertEqual(line.writes, [true])
        clock.advance(.milliseconds(100))
        driver.tick()
        XCTAssertEqual(line.writes, [true, false])

        driver.ledState = .meterOnline
        line.failNextWrite()
        driver.tick()
        XCTAssertEqual(line.writes, [true, false])
        driver.tick()
        XCTAssertEqual(line.writes, [true, false, true], "a failed write is retried on the next tick")
        driver.ledState = .off
        driver.tick()
        XCTAssertEqual(line.writes, [true, false, true, false])
    }
}
