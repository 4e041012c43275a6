import XCTest
@testable import History

/// The aggregator under synthetic time: no clock, no I/O.
final class ProfileAggregatorTests: XCTestCase {
    let interval: Int64 = 900
    let base: Int64 = 1_800_000_000 - 1_800_000_000 % 900  // a boundary
    var aggregator = ProfileAggregator(configuration: .init(meter: 7, interval: 900))
    /// Monotonic seconds; wall = base + offset + mono unless a test steps it.
    var mono: Double = 1000
    var wallOffset: Int64 = 0
    var importKWh = 100.0

    override func setUp() {
        aggregator = ProfileAggregator(configuration: .init(meter: 7, interval: 900))
        mono = 1000
        wallOffset = 0
        importKWh = 100
    }

    var wall: Int64 { base + wallOffset + Int64(mono - 1000) }

    func sample(power: Double = 1000) -> [ProfileAggregator.Action] {
        var energies = [Double?](repeating: nil, count: HistoryChannels.energies.count)
        energies[0] = importKWh
        var stats = [Double?](repeating: nil, count: HistoryChannels.statistics.count)
        stats[0] = power
        return aggregator.handle(.sample(.init(wall: wall, mono: UInt64(mono * 1e9), energies: energies, statistics: stats)))
    }

    /// Samples every `step` seconds for `seconds`, importing `kw` kW; returns the actions.
    func run(_ seconds: Double, step: Double = 5, kw: Double = 1, power: Double = 1000) -> [ProfileAggregator.Action] {
        var actions: [ProfileAggregator.Action] = []
        var t = 0.0
        while t < seconds {
            mono += step
            importKWh += kw * step / 3600
            actions += sample(power: power)
            t += step
        }
        return actions
    }

    func commits(_ actions: [ProfileAggregator.Action]) -> [(IntervalRecord, GapRecord?)] {
        actions.compactMap { if case .commit(let r, let g) = $0 { return (r, g) } else { return nil } }
    }

    func logs(_ actions: [ProfileAggregator.Action]) -> [String] {
        actions.compactMap { if case .log(let line, _) = $0 { return line } else { return nil } }
    }

    func testIntervalsEndOnWallClockMultiplesAndCarryEnergyAndStatistics() {
        _ = aggregator.handle(.clockTrusted(true))
        _ = sample(power: 2000)  // exactly on the boundary: the first interval is watched from its start
        let done = commits(run(3 * 900, power: 2000))
        XCTAssertEqual(done.map(\.0.end), [base + 900, base + 1800, base + 2700])
        for (record, gap) in done {
            XCTAssertEqual(record.end % interval, 0)
            XCTAssertEqual(record.end - record.start, interval)
            XCTAssertNil(gap)
            XCTAssertEqual(record.statistics[0]?.mean, 2000)
            XCTAssertEqual(record.deltas[0]!, 0.25, accuracy: 1e-9)  // 1 kW for 15 minutes
        }
        XCTAssertEqual(done[0].0.meter, 7)
    }

    func testRestartMidIntervalLeavesThatIntervalMissing() {
        _ = aggregator.handle(.resume(lastEnd: base - 900, energies: [Double?](repeating: 99, count: HistoryChannels.energies.count)))
        _ = aggregator.handle(.clockTrusted(true))
        mono += 420  // the board comes up at 7 minutes past the boundary
        _ = sample()
        let done = commits(run(2 * 900))
        // The partial interval [base, base+900) is never invented; the first one is [base+900, base+1800).
        XCTAssertEqual(done.map(\.0.start), [base + 900])
        XCTAssertEqual(done[0].1?.from, base - 900)
        XCTAssertEqual(done[0].1?.to, base + 900)
        XCTAssertEqual(done[0].1?.reason, "restart")
        // The gap's energy: from 99 kWh at the last stored end to the register at the first new start.
        XCTAssertEqual(done[0].1!.deltas[0]!, 100 + 480.0 / 3600 - 99, accuracy: 1e-6)
    }

    func testMeterOfflineDropsTheIntervalAndRecordsOneGap() {
        _ = aggregator.handle(.clockTrusted(true))
        _ = sample()
        var actions = run(900)  // interval 1 complete
        actions += run(300)
        _ = aggregator.handle(.meterOffline)
        mono += 2000  // offline for a while; energy keeps counting on the meter
        importKWh += 5
        actions += run(3 * 900)
        let done = commits(actions)
        let gaps = done.compactMap(\.1)
        XCTAssertEqual(gaps.count, 1, "one gap record for the whole outage")
        XCTAssertEqual(gaps[0].from, base + 900)
        XCTAssertEqual(gaps[0].reason, "offline")
        // No committed interval overlaps the outage.
        let outageStart = base + 1200, outageEnd = base + 1200 + 2000
        for (record, _) in done {
            XCTAssertFalse(record.start < outageEnd && record.end > outageStart, "interval \(record.start) overlaps the outage")
        }
        // Totals stay right: the interval deltas plus the gap delta equal the register's movement.
        let first = done.first!.0, last = done.last!.0
        let sum = done.reduce(0.0) { $0 + ($1.0.deltas[0] ?? 0) + ($1.1?.deltas[0] ?? 0) }
        XCTAssertEqual(sum, last.energies[0]! - first.energies[0]! + first.deltas[0]!, accuracy: 1e-6)
    }

    func testSilenceLongerThanMaxSilenceBreaksTheInterval() {
        _ = aggregator.handle(.clockTrusted(true))
        _ = sample()
        mono += 100  // samples stop (the poll loop stalled) for 100 s, inside the interval
        let done = commits(run(2 * 900))
        XCTAssertEqual(done.first?.0.start, base + 900)
    }

    func testClockStepForwardIsLoggedAndNeverCreatesIntervals() {
        _ = aggregator.handle(.clockTrusted(true))
        _ = sample()
        var actions = run(900 + 100)
        wallOffset += 7200  // NTP steps the clock two hours forward
        actions += run(3 * 900)
        XCTAssertTrue(logs(actions).contains { $0.contains("stepped forward by 7200 s") }, "\(logs(actions))")
        let done = commits(actions)
        // Only intervals actually watched: none inside the two hours the clock skipped.
        for (record, _) in done where record.start > base + 900 {
            XCTAssertGreaterThanOrEqual(record.start, base + 1000 + 7200 - 900)
        }
        XCTAssertEqual(done.compactMap(\.1).count, 1)
        XCTAssertEqual(done.compactMap(\.1).first?.reason, "clock")
    }

    func testClockStepBackNeverDuplicatesOrDeletesIntervals() {
        _ = aggregator.handle(.clockTrusted(true))
        _ = sample()
        var actions = run(3 * 900 + 10)
        let before = commits(actions).map(\.0.end)
        XCTAssertEqual(before, [base + 900, base + 1800, base + 2700])
        wallOffset -= 2000  // the clock goes back 33 minutes
        actions = run(4 * 900)
        XCTAssertTrue(logs(actions).contains { $0.contains("stepped back by 2000 s") })
        XCTAssertTrue(logs(actions).contains { $0.contains("behind the last stored interval") })
        let after = commits(actions).map(\.0.end)
        XCTAssertTrue(after.allSatisfy { $0 > base + 2700 }, "re-recorded an interval: \(after)")
    }

    func testNothingIsRecordedWhileTheClockIsNotTrusted() {
        _ = sample()
        XCTAssertTrue(commits(run(3 * 900)).isEmpty)
        _ = aggregator.handle(.clockTrusted(true))
        let done = commits(run(3 * 900))
        XCTAssertFalse(done.isEmpty)
        // The interval in which trust came is partial: the first one starts at the next boundary or later.
        XCTAssertGreaterThan(done[0].0.start, base + 2700 - 1)
    }

    func testFloorHandlesNegativeTimes() {
        XCTAssertEqual(ProfileAggregator.floor(-1, 900), -900)
        XCTAssertEqual(ProfileAggregator.floor(1799, 900), 900)
    }
}
