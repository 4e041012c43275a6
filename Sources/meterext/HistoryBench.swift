import ArgumentParser
import Glibc
import History
import Platform

/// Issue 15: the load-profile store under load (`make bench`, the SIGKILL test). Not shown in `--help`.
extension BenchCommand {
    struct HistoryTool: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "history", abstract: "Load-profile store: fill, query timing, a writer to kill.",
            subcommands: [Fill.self, Query.self, Writer.self])

        /// A plausible interval ending at `end` (every column filled, as a three-phase meter gives them).
        static func record(meter: UInt8, end: Int64, interval: Int64, index: Int64) -> IntervalRecord {
            let kwh = 1000 + Double(index) * 0.25
            let energies = HistoryChannels.energies.enumerated().map { Optional(kwh / Double($0.offset + 1)) }
            let deltas = HistoryChannels.gapEnergies.map { _ in Optional(0.25) }
            let statistics = HistoryChannels.statistics.indices.map { i in
                Optional(IntervalStatistic(mean: 200 + Double(i), min: 100 + Double(i), max: 300 + Double(i)))
            }
            return IntervalRecord(meter: meter, start: end - interval, end: end, energies: energies, deltas: deltas,
                                  statistics: statistics)
        }

        struct Fill: ParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Fills DAYS of intervals ending now; prints the file size.")
            @Option var db: String
            @Option var days: Int = 400
            @Option var interval: Int64 = 900
            @Option var meter: UInt8 = 1

            func run() throws {
                let store = try HistoryStore(path: db)
                let now = wallClockSeconds() / interval * interval
                let count = Int64(days) * 86_400 / interval
                var batch: [IntervalRecord] = []
                for i in 0..<count {
                    batch.append(HistoryTool.record(meter: meter, end: now - (count - 1 - i) * interval, interval: interval, index: i))
                    if batch.count == 2000 {
                        try store.append(contentsOf: batch)
                        batch.removeAll(keepingCapacity: true)
                    }
                }
                try store.append(contentsOf: batch)
                print(#"{"intervals":\#(count),"bytes":\#(store.fileBytes()),"last_seq":\#(try store.lastSeq(meter: meter))}"#)
            }
        }

        struct Query: ParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Times meter_history over the store; prints p50/p99 in ms.")
            @Option var db: String
            @Option var resolution: String = "day"
            @Option var days: Int = 400
            @Option var repeats: Int = 50
            @Option var obis: [String] = []

            func run() throws {
                let store = try HistoryStore(path: db)
                let commands = HistoryCommands(store: store, meters: [])
                let now = wallClockSeconds()
                guard let r = HistoryResolution(rawValue: resolution) else { throw ValidationError("bad resolution") }
                let codes = obis.isEmpty ? HistoryCode.all : obis.compactMap { HistoryCode.byOBIS[$0] }
                let request = HistoryRequest(meter: 1, from: now - Int64(days) * 86_400, to: now, resolution: r, codes: codes)
                var times: [Double] = []
                var entries = 0
                for _ in 0..<repeats {
                    let t0 = MonotonicClock.nowNanos()
                    let answer = try HistoryQuery(store: store).run(request)
                    let body = commands.json(answer, query: request)
                    times.append(Double(MonotonicClock.nowNanos() - t0) / 1e6)
                    entries = answer.series.reduce(0) { $0 + $1.entries.count }
                    _ = body.count
                }
                times.sort()
                let p = { (q: Double) in times[min(times.count - 1, Int(Double(times.count) * q))] }
                print(#"{"resolution":"\#(resolution)","entries":\#(entries),"p50_ms":\#(p(0.5)),"p99_ms":\#(p(0.99))}"#)
            }
        }

        struct Writer: ParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Appends one interval per transaction, as the recorder does, printing 'committed END' after each commit.")
            @Option var db: String
            @Option var interval: Int64 = 900
            @Option var count: Int = 1_000_000

            func run() throws {
                let store = try HistoryStore(path: db)
                let last = try store.lastInterval(meter: 1)?.end ?? 1_800_000_000
                for i in 1...Int64(count) {
                    let end = last + i * interval
                    let previous = end - interval
                    // Every tenth interval comes after a gap, so gaps are written under the kill too.
                    let gap = i % 10 == 0
                        ? GapRecord(meter: 1, from: previous - interval, to: previous, reason: "test", deltas: [0.5])
                        : nil
                    try store.append(HistoryTool.record(meter: 1, end: end, interval: interval, index: i), gap: gap)
                    print("committed \(end)")
                    fflush(stdout)
                }
            }
        }
    }
}
