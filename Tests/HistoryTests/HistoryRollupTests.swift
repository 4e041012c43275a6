import XCTest
import Glibc
import MeterService
@testable import History

/// Issue 15 follow-up: hour/day/month pages read the `hourly` roll-up; they must answer exactly what the
/// straightforward aggregation over the interval table answers.
final class HistoryRollupTests: XCTestCase {
    var dir = ""
    var path: String { dir + "/history.sqlite" }
    var savedTZ: String?

    override func setUp() {
        var template = Array("/tmp/history-rollup-XXXXXX".utf8CString)
        dir = String(cString: mkdtemp(&template))
        savedTZ = getenv("TZ").map { String(cString: $0) }
    }
    override func tearDown() {
        _ = system("rm -rf '\(dir)'")
        if let savedTZ { setenv("TZ", savedTZ, 1) } else { unsetenv("TZ") }
        tzset()
    }

    /// Every column filled with values that never sit on a rounding tie (so summation order cannot matter),
    /// some columns missing in some intervals.
    func record(_ end: Int64, _ i: Int, kwh: Double) -> IntervalRecord {
        let x = Double(i)
        let energies: [Double?] = HistoryChannels.energies.indices.map { k in
            k == 3 && i % 7 == 0 ? nil : kwh * Double(k + 1) + sin(x + Double(k))
        }
        let deltas: [Double?] = HistoryChannels.gapEnergies.indices.map { k in
            k == 2 && i % 5 == 0 ? nil : 0.25 + 0.1 * sin(x * 1.3 + Double(k))
        }
        let stats: [IntervalStatistic?] = HistoryChannels.statistics.indices.map { k in
            if k == 4 && i % 3 == 0 { return nil }
            let mean = 230 + 20 * sin(x * 0.7 + Double(k))
            return IntervalStatistic(mean: mean, min: mean - 3 - cos(x), max: mean + 4 + sin(x * 2))
        }
        return IntervalRecord(meter: 1, start: end - 900, end: end, energies: energies, deltas: deltas, statistics: stats)
    }

    /// About 75 days around the spring DST change of 2026 (29 March in Europe), back-filled months before, gaps of
    /// hours and days, single and bulk commits, and a 60-day retention that drops the oldest (mid-hour) on the way.
    func fill(_ store: HistoryStore, start: Int64) throws {
        var kwh = 1000.0
        var batch: [IntervalRecord] = []
        var lastEnd: Int64? = nil
        for i in 0..<(75 * 96) {
            let end = start + Int64(i + 1) * 900
            // Holes: 17 intervals every 1500, one whole day and a bit around day 40, and odd single ones.
            if i % 1500 < 17 || (i > 40 * 96 + 5 && i < 41 * 96 + 30) || i % 97 == 13 {
                kwh += 0.3
                continue
            }
            kwh += 0.25
            let interval = record(end, i, kwh: kwh)
            let gap = lastEnd.flatMap { $0 == end - 900 ? nil : GapRecord(meter: 1, from: $0, to: end - 900, reason: "offline",
                                                                            deltas: HistoryChannels.gapEnergies.indices.map { Double($0) + 0.3 }) }
            lastEnd = end
            if i < 20 * 96 && gap == nil {
                batch.append(interval)
                if batch.count == 500 { try store.append(contentsOf: batch); batch = [] }
            } else {
                if !batch.isEmpty { try store.append(contentsOf: batch); batch = [] }
                try store.append(interval, gap: gap)
            }
        }
        if !batch.isEmpty { try store.append(contentsOf: batch) }
        let calendar = BucketCalendar.local
        var month = calendar.bucket(endingAt: start, .month)
        var settlements: [SettlementRecord] = []
        for k in 0..<6 {
            settlements.append(SettlementRecord(meter: 1, at: month.start, values: [900 - Double(k) * 31.5, 400 - Double(k) * 7.25, nil, 3, 4]))
            month = calendar.bucket(endingAt: month.start, .month)
        }
        try store.storeSettlements(settlements)
    }

    struct Page: Equatable {
        var series: [[HistoryAnswer.Entry]]
        var gaps: [[Int64]]
        var next: Int64?
    }

    func pages(_ store: HistoryStore, _ request: HistoryRequest, maxEntries: Int) throws -> [Page] {
        var query = HistoryQuery(store: store, calendar: .local)
        query.maxEntries = maxEntries
        var request = request
        var out: [Page] = []
        while out.count < 200 {
            let answer = try query.run(request)
            out.append(Page(series: answer.series.map(\.entries), gaps: answer.gaps.map { [$0.from, $0.to] }, next: answer.next))
            guard let next = answer.next else { break }
            request.from = next
        }
        return out
    }

    func compare(_ store: HistoryStore, start: Int64, file: StaticString = #filePath, line: UInt = #line) throws -> Int {
        var differences = 0
        let end = start + 76 * 86_400
        let ranges: [(Int64, Int64)] = [(start - 200 * 86_400, end), (start + 3 * 86_400 + 1234, start + 50 * 86_400 - 77),
                                        (start + 40 * 86_400, start + 42 * 86_400)]
        let someCodes = ["1-0:1.29.0.255", "1-0:1.8.0.255", "1-0:16.5.0.255", "1-0:15.29.0.255", "1-0:15.8.1.255"]
            .map { HistoryCode.byOBIS[$0]! }
        for resolution in [HistoryResolution.hour, .day, .month] {
            for (from, to) in ranges {
                for (codes, maxEntries) in [(HistoryCode.all, 10_000), (someCodes, 10_000), (HistoryCode.all, 3_000)] {
                    let request = HistoryRequest(meter: 1, from: from, to: to, resolution: resolution, codes: codes)
                    store.useHourly = false
                    let slow = try pages(store, request, maxEntries: maxEntries)
                    store.useHourly = true
                    let fast = try pages(store, request, maxEntries: maxEntries)
                    XCTAssertFalse(slow.first?.series.allSatisfy(\.isEmpty) ?? true, "\(resolution) \(from)…\(to): has data",
                                   file: file, line: line)
                    if fast != slow { differences += 1 }
                }
            }
        }
        return differences
    }

    func run(zone: String, start: Int64, retentionDays: Int) throws {
        setenv("TZ", zone, 1)
        tzset()
        _ = system("rm -f '\(path)' '\(path)-wal' '\(path)-shm'")
        let store = try HistoryStore(path: path, retentionDays: retentionDays, maxBytes: 32 << 20)
        try fill(store, start: start)
        XCTAssertGreaterThan(try store.intervals(meter: 1, afterSeq: 0, limit: 1).first!.start, start + 10 * 86_400,
                             "the retention dropped the oldest intervals")
        XCTAssertEqual(try compare(store, start: start), 0, "\(zone): the roll-up answers like the interval table")

        // The check can fail: a roll-up that is off by one interval's energy in one hour is noticed (in zones
        // whose hours are whole UTC hours; Asia/Kolkata's are not, so it always takes the interval table).
        let db = try SQLiteConnection(path: path)
        try db.execute(#"UPDATE hourly SET d1_0 = d1_0 + 0.25 WHERE "end" = (SELECT MAX("end") FROM hourly)"#)
        let broken = try compare(store, start: start)
        if zone == "Asia/Kolkata" { XCTAssertEqual(broken, 0) } else { XCTAssertGreaterThan(broken, 0) }
    }

    func testRollUpAnswersLikeTheIntervalTableAcrossDSTGapsBackFillAndRetention() throws {
        // 2026-02-01 00:00 UTC: the data runs to mid-April, over the 29 March change.
        let start: Int64 = 1_769_904_000
        try run(zone: "Europe/Berlin", start: start, retentionDays: 60)
        try run(zone: "UTC", start: start, retentionDays: 60)
        try run(zone: "Asia/Kolkata", start: start, retentionDays: 60)
    }

    func testAStoreWithoutTheRollUpGetsItWhenOpened() throws {
        setenv("TZ", "Europe/Berlin", 1)
        tzset()
        let start: Int64 = 1_769_904_000
        let store = try HistoryStore(path: path, retentionDays: 400, maxBytes: 32 << 20)
        try fill(store, start: start)
        // An older store: no roll-up table and no note of it.
        let db = try SQLiteConnection(path: path)
        try db.execute("DROP TABLE hourly; DELETE FROM meta WHERE key = 'hourly'")
        let reopened = try HistoryStore(path: path, retentionDays: 400, maxBytes: 32 << 20)
        XCTAssertGreaterThan(try db.integer("SELECT COUNT(*) FROM hourly"), 1000)
        XCTAssertEqual(try compare(reopened, start: start), 0)
    }

    func testAnInstantaneousCodeNamesTheStoredStatistics() throws {
        let commands = HistoryCommands(store: nil, meters: [])
        guard case .failure(let error) = commands.validate(from: nil, to: nil, resolution: nil,
                                                           obis: ["1-0:16.7.0.255"], meter: nil) else {
            return XCTFail("16.7.0 is not stored")
        }
        XCTAssertTrue(error.message.contains("1-0:16.5.0.255 (mean), 1-0:16.3.0.255 (min), 1-0:16.6.0.255 (max)"),
                      error.message)
    }
}
