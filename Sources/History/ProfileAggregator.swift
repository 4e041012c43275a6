/// Turns poll samples into load-profile intervals. No I/O, no clock of its own: events in (samples with their wall
/// and monotonic time, meter offline, clock trust), actions out (commit an interval with the gap before it, log).
/// The recorder executes the actions; tests drive it with synthetic time.
///
/// Rules (issue 15):
/// - Intervals end on wall-clock multiples of `interval` seconds (Unix time, so 900 s ends on :00, :15, :30, :45).
/// - An interval is committed only when it was watched from its start to its end without a break: a sample at or
///   before its start boundary, samples throughout (no silence longer than `maxSilence`), the meter never offline,
///   the clock trusted and never stepped, and a sample at or after its end. Otherwise it is missing, never invented
///   (a board restarted mid-interval, a meter offline for a while, a clock step: the touched interval is dropped).
/// - The energy registers of an interval are those of the first sample at or after its end boundary (the first
///   reading of the new interval, at most one poll cycle late); mean/min/max come from the samples inside it.
/// - After missing intervals, the next committed interval carries one gap record (from the end of the last
///   committed interval to its start) with what the energy registers moved across the gap: totals stay right.
/// - A clock step (wall time moved differently from monotonic time by more than `stepTolerance`) is logged and
///   breaks the interval. After a step backwards, intervals that end at or before the last committed end are not
///   recorded again (logged once); recording resumes when the clock has passed it.
public struct ProfileAggregator: Sendable {
    public struct Configuration: Sendable {
        public var meter: UInt8
        /// Seconds; intervals end on multiples of it.
        public var interval: Int64
        /// Longest silence between two samples (monotonic seconds) that still counts as watching.
        public var maxSilence: Double
        /// A difference between wall and monotonic time passed above this many seconds is a clock step.
        public var stepTolerance: Double

        public init(meter: UInt8, interval: Int64, maxSilence: Double = 30, stepTolerance: Double = 3) {
            self.meter = meter
            self.interval = max(1, interval)
            self.maxSilence = maxSilence
            self.stepTolerance = stepTolerance
        }
    }

    /// One poll result.
    public struct Sample: Sendable {
        /// Unix seconds (wall clock, may be stepped).
        public var wall: Int64
        /// Monotonic nanoseconds (never stepped).
        public var mono: UInt64
        /// `HistoryChannels.energies` (kWh, kvarh); nil when not read.
        public var energies: [Double?]
        /// `HistoryChannels.statistics`; nil when not read.
        public var statistics: [Double?]

        public init(wall: Int64, mono: UInt64, energies: [Double?], statistics: [Double?]) {
            self.wall = wall
            self.mono = mono
            self.energies = energies
            self.statistics = statistics
        }
    }

    public enum Event: Sendable {
        /// The last stored interval (at start-up): the gap after a restart is measured from it.
        case resume(lastEnd: Int64, energies: [Double?])
        case sample(Sample)
        /// The meter does not answer (the link is offline): the running interval is missing.
        case meterOffline
        /// Whether wall time can be trusted (`TimeTrust`); untrusted: nothing is recorded.
        case clockTrusted(Bool)
    }

    public enum Action: Sendable, Equatable {
        /// Store the interval and, in the same transaction, the gap before it.
        case commit(IntervalRecord, gap: GapRecord?)
        /// A line for the service log; `warning` for what an installer should look at (clock steps).
        case log(String, warning: Bool)
    }

    /// The interval being watched.
    struct Open: Sendable {
        var start: Int64
        var end: Int64
        /// Watched from its start boundary, without a break so far.
        var intact: Bool
        var startEnergies: [Double?]
        var sum: [Double]
        var count: [Int]
        var low: [Double]
        var high: [Double]
        /// Why it is not intact (for the gap record's reason).
        var broken: String?
    }

    public let configuration: Configuration
    private(set) var open: Open?
    private var last: (wall: Int64, mono: UInt64)?
    private var trusted = false
    /// End and end energies of the last committed interval.
    private(set) var committed: (end: Int64, energies: [Double?])?
    /// Why intervals went missing since the last commit (the first reason wins).
    private var gapReason: String?
    private var loggedBehind = false

    public init(configuration: Configuration) {
        self.configuration = configuration
    }

    public mutating func handle(_ event: Event) -> [Action] {
        switch event {
        case .resume(let end, let energies):
            committed = (end, energies)
            gapReason = gapReason ?? "restart"
            return []
        case .clockTrusted(let value):
            guard value != trusted else { return [] }
            trusted = value
            if !value {
                breakInterval("untrusted")
                last = nil
                return [.log("history: the clock is not trusted: recording paused", warning: true)]
            }
            return [.log("history: the clock is trusted: recording from the next interval boundary", warning: false)]
        case .meterOffline:
            if open != nil || last != nil { breakInterval("offline") }
            last = nil
            return []
        case .sample(let sample):
            guard trusted else { return [] }
            return take(sample)
        }
    }

    private mutating func breakInterval(_ reason: String) {
        if var o = open, o.intact {
            o.intact = false
            o.broken = reason
            open = o
        }
        if gapReason == nil { gapReason = reason }
    }

    private mutating func take(_ sample: Sample) -> [Action] {
        var actions: [Action] = []
        let iv = configuration.interval
        if let last {
            let wallMoved = Double(sample.wall - last.wall)
            let monoMoved = Double(sample.mono &- last.mono) / 1e9
            if sample.mono < last.mono || abs(wallMoved - monoMoved) > configuration.stepTolerance {
                let step = Int64((wallMoved - monoMoved).rounded())
                actions.append(.log("history: the wall clock stepped \(step > 0 ? "forward" : "back") by \(abs(step)) s "
                    + "(\(last.wall) → \(sample.wall)): the interval in progress is dropped, a gap is recorded", warning: true))
                breakInterval("clock")
                open = nil
            } else if monoMoved > configuration.maxSilence {
                breakInterval("offline")
            }
        }
        last = (sample.wall, sample.mono)

        if let o = open, sample.wall >= o.end {
            actions += close(o, endEnergies: sample.energies)
            let start = Self.floor(sample.wall, iv)
            // Contiguous when this sample lies in the very next interval; otherwise intervals were skipped.
            open = makeOpen(start: start, intact: start == o.end, energies: sample.energies,
                            reason: start == o.end ? nil : "offline")
        } else if open == nil {
            let start = Self.floor(sample.wall, iv)
            // Started (or restarted) mid-interval: this interval is partial and will be missing.
            open = makeOpen(start: start, intact: sample.wall == start, energies: sample.energies, reason: "restart")
        }
        if let start = open?.start, let end = open?.end, sample.wall >= start, sample.wall < end {
            let n = open!.sum.count
            // Issue 18: accumulated in place (a copy of `open` would share each array's storage, so every write
            // below would copy it: four allocations per sample).
            for (i, value) in sample.statistics.enumerated() where i < n {
                guard let value, value.isFinite else { continue }
                open!.sum[i] += value
                open!.count[i] += 1
                open!.low[i] = Swift.min(open!.low[i], value)
                open!.high[i] = Swift.max(open!.high[i], value)
            }
        }
        return actions
    }

    private func makeOpen(start: Int64, intact: Bool, energies: [Double?], reason: String?) -> Open {
        let n = HistoryChannels.statistics.count
        return Open(start: start, end: start + configuration.interval, intact: intact, startEnergies: energies,
                    sum: Array(repeating: 0, count: n), count: Array(repeating: 0, count: n),
                    low: Array(repeating: .infinity, count: n), high: Array(repeating: -.infinity, count: n),
                    broken: intact ? nil : reason)
    }

    private mutating func close(_ o: Open, endEnergies: [Double?]) -> [Action] {
        guard o.intact else {
            if gapReason == nil { gapReason = o.broken ?? "offline" }
            return []
        }
        if let committed, o.end <= committed.end {
            // The clock went back: these intervals are stored already.
            if loggedBehind { return [] }
            loggedBehind = true
            return [.log("history: the clock is behind the last stored interval (ends \(committed.end)): "
                + "not recording until it has passed it", warning: true)]
        }
        loggedBehind = false
        let statistics = (0..<o.sum.count).map { i -> IntervalStatistic? in
            o.count[i] == 0 ? nil : IntervalStatistic(mean: o.sum[i] / Double(o.count[i]), min: o.low[i], max: o.high[i])
        }
        let deltaIndices = HistoryChannels.deltaEnergyIndices
        let deltas = deltaIndices.map { i -> Double? in
            guard i < endEnergies.count, i < o.startEnergies.count,
                  let a = o.startEnergies[i], let b = endEnergies[i] else { return nil }
            return b - a
        }
        let record = IntervalRecord(meter: configuration.meter, start: o.start, end: o.end, energies: endEnergies,
                                    deltas: deltas, statistics: statistics)
        var gap: GapRecord? = nil
        if let committed, committed.end < o.start {
            let gapDeltas = deltaIndices.map { i -> Double? in
                guard i < committed.energies.count, i < o.startEnergies.count,
                      let a = committed.energies[i], let b = o.startEnergies[i] else { return nil }
                return b - a
            }
            gap = GapRecord(meter: configuration.meter, from: committed.end, to: o.start,
                            reason: gapReason ?? "offline", deltas: gapDeltas)
        }
        committed = (o.end, endEnergies)
        gapReason = nil
        return [.commit(record, gap: gap)]
    }

    /// The largest multiple of `step` not above `t` (also for negative t).
    static func floor(_ t: Int64, _ step: Int64) -> Int64 {
        let r = t % step
        return r < 0 ? t - r - step : t - r
    }
}
