import Platform
import Synchronization
import XCTest

/// Issue 18: the housekeeping thread's schedule (which duty runs in which round) and its prompt stop.
final class PeriodicThreadTests: XCTestCase {
    final class Counts: @unchecked Sendable {
        let lock = Mutex<[String: Int]>([:])
        func add(_ key: String) { lock.withLock { $0[key, default: 0] += 1 } }
        subscript(key: String) -> Int { lock.withLock { $0[key, default: 0] } }
    }

    func testDutiesRunEveryNthRoundStartingWithTheFirst() throws {
        let counts = Counts()
        let seenAt = Mutex<[Int]>([])  // how many rounds had run when the every-5th duty ran
        let thread = PeriodicThread(periodNanos: 1_000_000, duties: [
            .init(every: 1, run: { counts.add("each") }),
            .init(every: 5, run: {
                counts.add("fifth")
                let rounds = counts["each"]
                seenAt.withLock { $0.append(rounds) }
            }, atStop: { counts.add("stopped") }),
        ])
        try thread.start(name: "test-tick")
        while counts["each"] < 23 { usleep(1000) }
        thread.stop()
        // Stopped: the counts are final. Rounds 0, 5, 10, … ran the second duty.
        let rounds = counts["each"]
        XCTAssertGreaterThanOrEqual(rounds, 23)
        XCTAssertEqual(counts["fifth"], (rounds + 4) / 5)
        XCTAssertEqual(seenAt.withLock { $0 }, Array(stride(from: 1, through: rounds, by: 5)))
        XCTAssertEqual(counts["stopped"], 1)
        thread.stop()  // a second stop is harmless
        XCTAssertEqual(counts["stopped"], 1)
    }

    func testStopWakesASleepingThread() throws {
        let counts = Counts()
        // An hour between rounds: only the eventfd can end the sleep (the test would hang otherwise).
        let thread = PeriodicThread(periodNanos: 3_600_000_000_000, duties: [
            .init(every: 1, run: { counts.add("round") }, atStop: { counts.add("stopped") }),
        ])
        try thread.start(name: "test-tick")
        while counts["round"] < 1 { usleep(1000) }
        thread.stop()
        XCTAssertEqual(counts["round"], 1)
        XCTAssertEqual(counts["stopped"], 1)
    }
}
