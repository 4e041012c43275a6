import XCTest
import Glibc
import MeterService
@testable import History

final class HistoryStoreTests: XCTestCase {
    var dir = ""
    var path: String { dir + "/history.sqlite" }

    override func setUp() {
        var template = Array("/tmp/history-test-XXXXXX".utf8CString)
        dir = String(cString: mkdtemp(&template))
        setenv("TZ", "UTC", 1)
        tzset()
    }
    override func tearDown() { _ = system("rm -rf '\(dir)'") }

    func record(_ end: Int64, meter: UInt8 = 1, interval: Int64 = 900, kwh: Double = 10, delta: Double = 0.25,
                power: Double = 500) -> IntervalRecord {
        var energies = [Double?](repeating: nil, count: HistoryChannels.energies.count)
        energies[0] = kwh
        var deltas = [Double?](repeating: nil, count: HistoryChannels.gapEnergies.count)
        deltas[0] = delta
        var stats = [IntervalStatistic?](repeating: nil, count: HistoryChannels.statistics.count)
        stats[0] = IntervalStatistic(mean: power, min: power - 100, max: power + 100)
        return IntervalRecord(meter: meter, start: end - interval, end: end, energies: energies, deltas: deltas,
                              statistics: stats)
    }

    let t0: Int64 = 1_800_000_000 - 1_800_000_000 % 86_400

    func testAppendReadAndSeqNeverReused() throws {
        let store = try HistoryStore(path: path, retentionDays: 1, maxBytes: 32 << 20)
        XCTAssertEqual(try store.lastSeq(meter: 1), 0)
        let a = try store.append(record(t0 + 900))
        let b = try store.append(record(t0 + 1800))
        XCTAssertEqual(try store.append(record(t0 + 1800)), b, "a replayed interval is not stored twice")
        _ = try store.append(record(t0 + 900, meter: 2))
        XCTAssertLessThan(a, b)
        let rows = try store.intervals(meter: 1, afterSeq: 0, limit: 10)
        XCTAssertEqual(rows.map(\.seq), [a, b])
        XCTAssertEqual(rows[0].values.first { $0.obis == "1-0:1.8.0.255" }?.value, 10)
        XCTAssertEqual(rows[0].values.first { $0.obis == "1-0:16.5.0.255" }?.value, 500)
        XCTAssertEqual(try store.intervals(meter: 1, afterSeq: a, limit: 10).map(\.seq), [b])
        // Two days later the old rows are beyond the one-day retention and dropped; seqs keep increasing.
        let c = try store.append(record(t0 + 2 * 86_400))
        XCTAssertGreaterThan(c, b)
        XCTAssertEqual(try store.intervals(meter: 1, afterSeq: 0, limit: 10).map(\.seq), [c])
    }

    func testGapsAreStoredWithTheInterval() throws {
        let store = try HistoryStore(path: path)
        let gap = GapRecord(meter: 1, from: t0 + 900, to: t0 + 3600, reason: "offline", deltas: [1.5])
        try store.append(record(t0 + 4500), gap: gap)
        let gaps = try store.gaps(meter: 1, from: t0, to: t0 + 86_400)
        XCTAssertEqual(gaps.count, 1)
        XCTAssertEqual(gaps[0].from, t0 + 900)
        XCTAssertEqual(gaps[0].values.first?.value, 1.5)
    }

    func testFourHundredDaysOfFifteenMinuteIntervalsFitIn32MB() throws {
        let store = try HistoryStore(path: path)
        let count: Int64 = 400 * 96
        var batch: [IntervalRecord] = []
        for i in 0..<count {
            var r = record(t0 + (i + 1) * 900, kwh: Double(i))
            r.energies = r.energies.map { _ in Double(i) * 1.000001 }
            r.deltas = r.deltas.map { _ in 0.25 }
            r.statistics = r.statistics.map { _ in IntervalStatistic(mean: 230.1, min: 229.5, max: 231.2) }
            batch.append(r)
            if batch.count == 4000 { try store.append(contentsOf: batch); batch = [] }
        }
        try store.append(contentsOf: batch)
        XCTAssertEqual(try store.intervals(meter: 1, afterSeq: 0, limit: 1).first?.seq, 1, "nothing was dropped")
        XCTAssertLessThanOrEqual(store.fileBytes(), 32 << 20)
        // A day more: the oldest day goes, the file stays bounded.
        for i in count..<(count + 96) { try store.append(record(t0 + (i + 1) * 900)) }
        XCTAssertGreaterThan(try store.intervals(meter: 1, afterSeq: 0, limit: 1).first!.start, t0)
        XCTAssertLessThanOrEqual(store.fileBytes(), 32 << 20)
    }

    func testSizeBoundDropsTheOldestFirst() throws {
        let store = try HistoryStore(path: path, retentionDays: 10_000, maxBytes: 3 << 20)
        var batch: [IntervalRecord] = []
        for i in 0..<Int64(20_000) {
            batch.append(record(t0 + (i + 1) * 900))
            if batch.count == 1000 { try store.append(contentsOf: batch); batch = [] }
        }
        let first = try store.intervals(meter: 1, afterSeq: 0, limit: 1).first!
        XCTAssertGreaterThan(first.seq, 1, "the oldest intervals were dropped")
        XCTAssertEqual(try store.lastSeq(meter: 1), 20_000, "the newest is kept")
        XCTAssertLessThanOrEqual(store.fileBytes(), 3 << 20)
    }

    func testACorruptFileIsMovedAsideAndAFreshStoreCreated() throws {
        let garbage = Array(repeating: UInt8(0x5A), count: 8192)
        let fd = open(path, O_WRONLY | O_CREAT, 0o600)
        _ = garbage.withUnsafeBytes { write(fd, $0.baseAddress, 8192) }
        close(fd)
        let store = try HistoryStore(path: path)
        XCTAssertEqual(store.openNotes.count, 1)
        XCTAssertTrue(store.openNotes[0].contains("moved aside"), store.openNotes[0])
        XCTAssertEqual(try store.lastSeq(meter: 1), 0)
        _ = try store.append(record(t0 + 900))
        let aside = try listDir(dir).filter { $0.hasPrefix("history.sqlite.corrupt-") }
        XCTAssertEqual(aside.count, 1)
    }

    func listDir(_ path: String) throws -> [String] {
        guard let d = opendir(path) else { return [] }
        defer { closedir(d) }
        var names: [String] = []
        while let e = readdir(d) {
            names.append(withUnsafeBytes(of: e.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) })
        }
        return names
    }

    func testDayAndMonthTotalsIncludeGapsAndBackFill() throws {
        let store = try HistoryStore(path: path)
        // Day 1: 96 intervals of 0.25 kWh; day 2: 40 intervals, a 10-interval gap with 3 kWh, 46 more.
        var kwh = 100.0
        for i in 0..<Int64(96) { kwh += 0.25; try store.append(record(t0 + (i + 1) * 900, kwh: kwh)) }
        for i in 96..<Int64(136) { kwh += 0.25; try store.append(record(t0 + (i + 1) * 900, kwh: kwh)) }
        let gapFrom = t0 + 136 * 900, gapTo = t0 + 146 * 900
        kwh += 3
        for i in 146..<Int64(192) {
            kwh += 0.25
            try store.append(record(t0 + (i + 1) * 900, kwh: kwh),
                             gap: i == 146 ? GapRecord(meter: 1, from: gapFrom, to: gapTo, reason: "offline", deltas: [3]) : nil)
        }
        let settlement = [Double?]([50, nil, nil, nil, nil])
        let earlier = [Double?]([20, nil, nil, nil, nil])
        // The meter's own settlement values at the starts of the two months before t0's month.
        let calendar = BucketCalendar(utc: true)
        let month = calendar.bucket(endingAt: t0 + 1, .month)
        let previous = calendar.bucket(endingAt: month.start, .month)
        try store.storeSettlements([SettlementRecord(meter: 1, at: month.start, values: settlement),
                                    SettlementRecord(meter: 1, at: previous.start, values: earlier)])
        let query = HistoryQuery(store: store, calendar: calendar)
        let codes = ["1-0:1.29.0.255", "1-0:1.8.0.255", "1-0:16.5.0.255"].map { HistoryCode.byOBIS[$0]! }
        let days = try query.run(HistoryRequest(meter: 1, from: t0, to: t0 + 2 * 86_400, resolution: .day, codes: codes))
        XCTAssertEqual(days.series[0].entries.map(\.ts), [t0 + 86_400, t0 + 2 * 86_400])
        XCTAssertEqual(days.series[0].entries.map(\.val), [24_000, 86 * 250 + 3000], "Wh per day, the gap's 3 kWh included")
        XCTAssertEqual(days.series[1].entries.last?.val, Int64((kwh * 1000).rounded()))
        XCTAssertEqual(days.series[2].entries.first?.val, 500)
        XCTAssertEqual(days.gaps.map(\.from), [gapFrom])

        let months = try query.run(HistoryRequest(meter: 1, from: previous.start - 1, to: t0 + 2 * 86_400,
                                                  resolution: .month, codes: [HistoryCode.byOBIS["1-0:15.29.0.255"]!]))
        let entries = months.series[0].entries
        XCTAssertEqual(entries.first?.ts, month.start)
        XCTAssertEqual(entries.first?.val, 30_000, "the month before installation: 50 − 20 kWh, from the meter")
        XCTAssertEqual(entries.first?.fromMeter, true)
    }

    func testPagingNeverReturnsMoreThanTheLimitAndContinues() throws {
        let store = try HistoryStore(path: path)
        var batch: [IntervalRecord] = []
        for i in 0..<Int64(300) { batch.append(record(t0 + (i + 1) * 900)) }
        try store.append(contentsOf: batch)
        var query = HistoryQuery(store: store, calendar: BucketCalendar(utc: true))
        query.maxEntries = 100
        let codes = [HistoryCode.byOBIS["1-0:1.8.0.255"]!, HistoryCode.byOBIS["1-0:16.5.0.255"]!]
        var from = t0
        var seen: [Int64] = []
        while true {
            let page = try query.run(HistoryRequest(meter: 1, from: from, to: t0 + 301 * 900, resolution: .interval, codes: codes))
            XCTAssertLessThanOrEqual(page.series.reduce(0) { $0 + $1.entries.count }, 100)
            seen += page.series[0].entries.map(\.ts)
            guard let next = page.next else { break }
            from = next
        }
        XCTAssertEqual(seen, (1...300).map { t0 + Int64($0) * 900 })
    }
}
