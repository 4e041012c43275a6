import XCTest
@testable import MeterStatus

final class DebouncedConditionTests: XCTestCase {
    func testRaisesAtExactlyTheMinimumDuration() {
        var condition = DebouncedCondition(minimumDuration: 5)
        XCTAssertFalse(condition.update(.beyond, now: 1))
        XCTAssertFalse(condition.update(.beyond, now: 5.999))
        XCTAssertTrue(condition.update(.beyond, now: 6))
        XCTAssertEqual(condition.raisedAt, 6)
    }

    func testInBandBeforeRaisingRestartsTheTimer() {
        var condition = DebouncedCondition(minimumDuration: 5)
        condition.update(.beyond, now: 0)
        condition.update(.inBand, now: 4)
        XCTAssertEqual(condition.state, .idle)
        condition.update(.beyond, now: 5)
        XCTAssertFalse(condition.update(.beyond, now: 9))
        XCTAssertTrue(condition.update(.beyond, now: 10))
    }

    func testClearingIsRestartedByAnythingNotWithin() {
        var condition = DebouncedCondition(minimumDuration: 5)
        condition.update(.beyond, now: 0)
        condition.update(.beyond, now: 5)
        XCTAssertTrue(condition.update(.within, now: 6))
        XCTAssertEqual(condition.state, .clearing(raisedAt: 5, since: 6))
        XCTAssertTrue(condition.update(.inBand, now: 10))
        XCTAssertEqual(condition.state, .active(raisedAt: 5))
        XCTAssertTrue(condition.update(.within, now: 11))
        XCTAssertTrue(condition.update(.within, now: 15.5))
        XCTAssertFalse(condition.update(.within, now: 16))
        XCTAssertEqual(condition.state, .idle)
    }

    func testUnknownDropsARaisedAlert() {
        var condition = DebouncedCondition(minimumDuration: 0)
        XCTAssertTrue(condition.update(.beyond, now: 0))
        XCTAssertFalse(condition.update(.unknown, now: 1))
        XCTAssertEqual(condition.state, .idle)
    }

    func testAClockSteppingBackRestartsTheTimerInsteadOfRaising() {
        var condition = DebouncedCondition(minimumDuration: 5)
        condition.update(.beyond, now: 100)
        XCTAssertFalse(condition.update(.beyond, now: 50))
        XCTAssertFalse(condition.update(.beyond, now: 54))
        XCTAssertTrue(condition.update(.beyond, now: 55))
    }
}
