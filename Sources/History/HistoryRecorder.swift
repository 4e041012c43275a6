import KPM33B
import MeterService
import Platform
import Synchronization

/// Feeds the poll loop's snapshots to one `ProfileAggregator` per meter and executes its actions against the store.
///
/// It only reads snapshots (no bus traffic of its own) and runs on its own thread (`meterext-hist`), so SQLite
/// never blocks the poll loop or an event loop. One transaction per committed interval, none per poll cycle.
public final class HistoryRecorder: @unchecked Sendable {
    public struct Meter: Sendable {
        public var address: UInt8
        public var link: any MeterLink
        public init(address: UInt8, link: any MeterLink) {
            self.address = address
            self.link = link
        }
    }

    let store: HistoryStore
    let trust: TimeTrust
    let log: @Sendable (LogLevel, String) -> Void
    let settlementCalendar: any SettlementCalendar
    let period: Double
    private var meters: [(Meter, ProfileAggregator, lastGeneration: UInt64, lastHistoryRead: Int64,
                          lastClockCheck: Int64)]
    private var lastVerdict: TimeTrust.Verdict?
    /// Sample buffers reused by `tick` (recorder thread only).
    private var energyBuffer: [Double?] = []
    private var statisticBuffer: [Double?] = []
    private let running = Atomic<Bool>(false)
    private var thread: OSThread?

    public enum LogLevel: Sendable { case info, warning, error }

    /// - Parameters:
    ///   - interval: `--profile-interval` seconds.
    ///   - period: how often snapshots are looked at (the poll cycle).
    public init(store: HistoryStore, meters: [Meter], interval: Int64, period: Double, trust: TimeTrust,
                settlementCalendar: any SettlementCalendar = LocalSettlementCalendar(),
                log: @escaping @Sendable (LogLevel, String) -> Void) {
        self.store = store
        self.trust = trust
        self.log = log
        self.period = max(0.05, min(period, 1.0))
        self.settlementCalendar = settlementCalendar
        self.meters = meters.map { meter in
            // A silence of a few poll cycles is the poller's own offline limit; give it some slack.
            var aggregator = ProfileAggregator(configuration: .init(meter: meter.address, interval: interval,
                                                                    maxSilence: max(30, 3 * Double(interval))))
            if let last = try? store.lastInterval(meter: meter.address) {
                _ = aggregator.handle(.resume(lastEnd: last.end, energies: last.energies))
            }
            return (meter, aggregator, 0, 0, 0)
        }
    }

    public func start() throws(SystemError) {
        running.store(true, ordering: .releasing)
        thread = try OSThread(name: "meterext-hist") { [self] in
            while running.load(ordering: .acquiring) {
                tick(wall: wallClockSeconds(), mono: MonotonicClock.nowNanos())
                MonotonicClock.sleep(nanos: UInt64(period * 1e9))
            }
        }
    }

    public func stop() {
        running.store(false, ordering: .releasing)
        thread?.join()
        thread = nil
    }

    /// One look at every meter's latest snapshot (the thread's loop body; tests call it directly).
    public func tick(wall: Int64, mono: UInt64) {
        let verdict = trust.verdict(now: wall)
        let trusted = verdict == .trusted
        if verdict != lastVerdict {
            if !trusted { log(.warning, "history: not recording: \(verdict.reason)") }
            lastVerdict = verdict
        }
        for i in meters.indices {
            execute(meters[i].1.handle(.clockTrusted(trusted)), meter: meters[i].0.address)
            let snapshot = meters[i].0.link.snapshot()
            guard snapshot.generation != meters[i].lastGeneration else { continue }
            meters[i].lastGeneration = snapshot.generation
            switch snapshot.health {
            case .offline:
                execute(meters[i].1.handle(.meterOffline), meter: meters[i].0.address)
            case .starting, .stale:
                continue  // no fresh values in this cycle; a long silence breaks the interval by itself
            case .online:
                // Issue 18: the sample's arrays are the recorder's own, refilled in place every cycle.
                HistoryChannels.read(snapshot, energies: &energyBuffer, statistics: &statisticBuffer)
                let actions = meters[i].1.handle(.sample(ProfileAggregator.Sample(
                    wall: wall, mono: mono, energies: energyBuffer, statistics: statisticBuffer)))
                execute(actions, meter: meters[i].0.address)
            }
            guard trusted else { continue }
            if let readAt = snapshot.readTime(.history), readAt != meters[i].lastHistoryRead {
                meters[i].lastHistoryRead = readAt
                storeSettlements(snapshot, readAt: readAt, meter: meters[i].0.address)
            }
            if let parameters = snapshot.parameters, let readAt = snapshot.readTime(.parameters),
               readAt - meters[i].lastClockCheck >= 3600 {
                meters[i].lastClockCheck = readAt
                if let warning = TimeTrust.meterClockWarning(parameters.clock, readAt: readAt) {
                    log(.warning, "meter \(meters[i].0.address): " + warning)
                }
            }
        }
    }

    private func execute(_ actions: [ProfileAggregator.Action], meter: UInt8) {
        for action in actions {
            switch action {
            case .log(let line, let warning):
                log(warning ? .warning : .info, "meter \(meter): " + line)
            case .commit(let interval, let gap):
                do {
                    try store.append(interval, gap: gap)
                    if let gap {
                        log(.info, "history: meter \(meter): gap \(gap.from)–\(gap.to) (\(gap.reason)) recorded")
                    }
                } catch {
                    log(.error, "history: meter \(meter): the interval ending \(interval.end) could not be stored: \(error)")
                }
            }
        }
    }

    /// The meter's 12 previous settlement values (combined active energy, total and T1…T4).
    private func storeSettlements(_ snapshot: MeterSnapshot, readAt: Int64, meter: UInt8) {
        let runs = Register.historyRuns.filter(\.active).sorted { $0.tariff < $1.tariff }
        var records: [SettlementRecord] = []
        for month in 1..<HistoryRun.months {
            let values = runs.map { run in snapshot.value(run.register(month: month)).map(Double.init) }
            guard values.contains(where: { $0 != nil }) else { continue }
            records.append(SettlementRecord(meter: meter, at: settlementCalendar.settlement(month, before: readAt),
                                            values: values))
        }
        do { try store.storeSettlements(records) } catch {
            log(.error, "history: meter \(meter): the meter's settlement values could not be stored: \(error)")
        }
    }
}
