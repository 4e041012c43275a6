@testable import KPM33B
import XCTest

/// Issue 17: one schedule across several meters, driven by synthetic time.
final class BusScheduleTests: XCTestCase {
    let s: UInt64 = 1_000_000_000

    func testEveryMeterIsPolledOncePerCycle() {
        var schedule = BusSchedule(meters: 3, now: 0, cycleNanos: s, offlineAfterNanos: 5 * s)
        var now: UInt64 = 0
        var polled: [Int] = []
        while now < 10 * s {
            switch schedule.next(now: now) {
            case .poll(let i):
                polled.append(i)
                schedule.completed(i, started: now, ok: true, now: now + 50_000_000)
                now += 50_000_000
            case .sleep(let until):
                XCTAssertGreaterThan(until, now)
                now = until
            }
        }
        for i in 0..<3 { XCTAssertEqual(polled.filter { $0 == i }.count, 10, "meter \(i)") }
        XCTAssertEqual(Array(polled.prefix(6)), [0, 1, 2, 0, 1, 2])
    }

    /// Bus slower than the cycle: the meters take turns, nobody starves.
    func testOverloadedBusSharesFairly() {
        var schedule = BusSchedule(meters: 3, now: 0, cycleNanos: s, offlineAfterNanos: 5 * s)
        var now: UInt64 = 0
        var counts = [0, 0, 0]
        for _ in 0..<300 {
            guard case .poll(let i) = schedule.next(now: now) else { return XCTFail("an overloaded bus never sleeps") }
            counts[i] += 1
            schedule.completed(i, started: now, ok: true, now: now + 600_000_000)
            now += 600_000_000
        }
        XCTAssertEqual(counts, [100, 100, 100])
    }

    /// A silent meter backs off exponentially once it counts as offline; the others keep their cycle.
    func testSilentMeterBacksOffWithoutSlowingTheOthers() {
        var schedule = BusSchedule(meters: 2, now: 0, cycleNanos: s, offlineAfterNanos: 5 * s, maxBackoffNanos: 8 * s)
        var now: UInt64 = 0
        var attempts: [UInt64] = []
        var healthy: [UInt64] = []
        while now < 60 * s {
            switch schedule.next(now: now) {
            case .poll(1):
                attempts.append(now)
                // A silent meter costs a timeout on the bus.
                schedule.completed(1, started: now, ok: false, now: now + 600_000_000)
                now += 600_000_000
            case .poll(let i):
                healthy.append(now)
                schedule.completed(i, started: now, ok: true, now: now + 100_000_000)
                now += 100_000_000
            case .sleep(let until):
                now = until
            }
        }
        // Every cycle while not yet offline, then 2, 4, 8, 8, … cycles apart.
        let gaps = zip(attempts.dropFirst(), attempts).map { Double($0 - $1) / 1e9 }
        XCTAssertEqual(gaps.prefix(5).map { $0.rounded() }, [1, 1, 1, 1, 1])
        // (Each gap also holds the failed attempt's own timeout and at most one poll of the other meter.)
        for (gap, backoff) in zip(gaps.dropFirst(5), [2.0, 4, 8, 8, 8, 8]) {
            XCTAssertGreaterThanOrEqual(gap, backoff)
            XCTAssertLessThanOrEqual(gap, backoff + 0.7)
        }
        // The healthy meter: one poll per second throughout, never later than its cycle plus one timeout.
        let healthyGaps = zip(healthy.dropFirst(), healthy).map { $0 - $1 }
        XCTAssertLessThanOrEqual(healthyGaps.max() ?? 0, s + 600_000_000)
        XCTAssertGreaterThanOrEqual(healthy.count, 59)
        XCTAssertLessThan(attempts.count, 20)
    }

    func testOneAnswerResetsTheBackoff() {
        var schedule = BusSchedule(meters: 2, now: 0, cycleNanos: s, offlineAfterNanos: 2 * s, maxBackoffNanos: 30 * s)
        for t in 0..<6 { schedule.completed(1, started: UInt64(t) * s, ok: false, now: UInt64(t) * s) }
        XCTAssertGreaterThan(schedule.entries[1].backoffSteps, 0)
        schedule.completed(1, started: 20 * s, ok: true, now: 20 * s)
        XCTAssertEqual(schedule.entries[1], BusSchedule.Entry(nextDue: 21 * s, failingSince: nil, backoffSteps: 0))
    }

    /// Alone on its bus a silent meter keeps its cycle: nobody to give way to, and recovery is seen at once.
    func testSingleMeterNeverBacksOff() {
        var schedule = BusSchedule(meters: 1, now: 0, cycleNanos: s, offlineAfterNanos: 2 * s)
        for t in 0..<20 { schedule.completed(0, started: UInt64(t) * s, ok: false, now: UInt64(t) * s + s / 2) }
        XCTAssertEqual(schedule.entries[0].nextDue, 20 * s)
        XCTAssertEqual(schedule.entries[0].backoffSteps, 0)
    }
}
