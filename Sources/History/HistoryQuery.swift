import Glibc
import MeterService

/// `meter_history` resolutions.
public enum HistoryResolution: String, Sendable, CaseIterable {
    case interval, hour, day, month
}

/// Where hour, day and month buckets begin and end: the board's local time zone (TZ, /etc/localtime), or UTC.
public struct BucketCalendar: Sendable {
    public var utc: Bool
    public init(utc: Bool = false) { self.utc = utc }
    public static let local = BucketCalendar(utc: false)

    /// The bucket `(start, end]` that a period ending at `t` belongs to.
    public func bucket(endingAt t: Int64, _ resolution: HistoryResolution) -> (start: Int64, end: Int64) {
        var time = time_t(t - 1)
        var parts = tm()
        if utc { gmtime_r(&time, &parts) } else { localtime_r(&time, &parts) }
        parts.tm_sec = 0
        parts.tm_min = 0
        switch resolution {
        case .interval, .hour: break
        case .day: parts.tm_hour = 0
        case .month:
            parts.tm_hour = 0
            parts.tm_mday = 1
        }
        var next = parts
        switch resolution {
        case .interval, .hour: next.tm_hour += 1
        case .day: next.tm_mday += 1
        case .month: next.tm_mon += 1
        }
        return (make(&parts), make(&next))
    }

    private func make(_ parts: inout tm) -> Int64 {
        if utc { return Int64(timegm(&parts)) }
        parts.tm_isdst = -1
        return Int64(mktime(&parts))
    }
}

/// One OBIS code `meter_history` can answer, and how it is made from the stored columns.
public struct HistoryCode: Sendable {
    public enum Kind: Sendable {
        /// Register value at the end of the last interval of the bucket.
        case register
        /// Energy moved in the bucket (interval deltas, plus the gaps where recording resumed in it).
        case delta
        case mean, min, max
    }
    public let obis: String
    public let kind: Kind
    /// Index into `HistoryChannels.valueColumns`.
    public let column: Int
    public let scale: Int
    public let unit: Int
    /// Physical unit → API unit (kWh → Wh).
    public let factor: Double
    /// Index into the settlement values when the meter's own history can back-fill it (15.8.x, 15.29.x).
    public let settlement: Int?

    /// Every code, in reply order.
    public static let all: [HistoryCode] = {
        var codes: [HistoryCode] = []
        let energies = HistoryChannels.energies, deltas = HistoryChannels.gapEnergies
        for (i, e) in energies.enumerated() {
            codes.append(HistoryCode(obis: e.obis, kind: .register, column: i, scale: 0, unit: e.unit, factor: 1000,
                                     settlement: HistoryStore.settlementOBIS.firstIndex(of: e.obis)))
        }
        for (i, e) in deltas.enumerated() {
            codes.append(HistoryCode(obis: e.deltaOBIS, kind: .delta, column: energies.count + i, scale: 0,
                                     unit: e.unit, factor: 1000,
                                     settlement: HistoryStore.settlementOBIS.firstIndex(of: e.obis)))
        }
        let base = energies.count + deltas.count
        for (i, s) in HistoryChannels.statistics.enumerated() {
            let column = base + 3 * i
            codes.append(HistoryCode(obis: s.meanOBIS, kind: .mean, column: column, scale: s.scale, unit: s.unit,
                                     factor: 1, settlement: nil))
            codes.append(HistoryCode(obis: s.minOBIS, kind: .min, column: column + 1, scale: s.scale, unit: s.unit,
                                     factor: 1, settlement: nil))
            codes.append(HistoryCode(obis: s.maxOBIS, kind: .max, column: column + 2, scale: s.scale, unit: s.unit,
                                     factor: 1, settlement: nil))
        }
        return codes
    }()

    public static let byOBIS: [String: HistoryCode] = Dictionary(uniqueKeysWithValues: all.map { ($0.obis, $0) })
}

/// A `meter_history` question, validated.
public struct HistoryRequest: Sendable {
    public var meter: UInt8
    public var from: Int64
    public var to: Int64
    public var resolution: HistoryResolution
    public var codes: [HistoryCode]
    public init(meter: UInt8, from: Int64, to: Int64, resolution: HistoryResolution, codes: [HistoryCode] = HistoryCode.all) {
        self.meter = meter
        self.from = from
        self.to = to
        self.resolution = resolution
        self.codes = codes
    }
}

/// The answer: one series per code (values already scaled to the API's integers), the gaps, and where to go on.
public struct HistoryAnswer: Sendable {
    public struct Entry: Sendable, Equatable {
        public var ts: Int64
        public var val: Int64
        /// Back-filled from the meter's own settlement history (months before the board recorded).
        public var fromMeter: Bool
    }
    public struct Series: Sendable {
        public var code: HistoryCode
        public var entries: [Entry]
    }
    public var series: [Series]
    public var gaps: [(from: Int64, to: Int64)]
    /// Set when the reply was cut at `maxEntries`: the `from` that continues after the last entry.
    public var next: Int64?
}

/// Reads a range from the store and aggregates it into buckets. Runs on the caller's thread (a blocking queue).
public struct HistoryQuery: Sendable {
    public let store: HistoryStore
    public var calendar: BucketCalendar
    /// At most this many `{ts,val}` entries per reply (issue 15: 10 000).
    public var maxEntries: Int

    public init(store: HistoryStore, calendar: BucketCalendar = .local, maxEntries: Int = 10_000) {
        self.store = store
        self.calendar = calendar
        self.maxEntries = maxEntries
    }

    struct Bucket {
        var start: Int64
        var end: Int64
        /// Per requested code: accumulated value.
        var value: [Double?]
        var weight: [Double]
        var fromMeter = false
    }

    public func run(_ request: HistoryRequest) throws -> HistoryAnswer {
        let codes = request.codes
        let perPage = max(1, maxEntries / max(1, codes.count))
        let columns = codes.map(\.column)
        var buckets: [Bucket] = []
        var more = false

        if request.resolution == .interval {
            // Periods (start, end] that overlap (from, to]: end > from and start < to.
            let rows = try store.rows(meter: request.meter, endAfter: request.from, endAtMost: Int64.max,
                                      columns: columns, limit: perPage + 1, startBefore: request.to)
            more = rows.count > perPage
            for row in rows.prefix(perPage) {
                buckets.append(Bucket(start: row.start, end: row.end,
                                      value: codes.indices.map { row.values[$0] }, weight: codes.map { _ in 1 }))
            }
        } else {
            let first = calendar.bucket(endingAt: request.from + 1, request.resolution)
            let lastEdge = calendar.bucket(endingAt: request.to, request.resolution).end
            // Bucket edges in the board's time zone (from the first stored interval on), then SQLite aggregates the
            // intervals of each bucket, a page's worth of buckets at a time.
            var edges: [(start: Int64, end: Int64)] = []
            let firstStored = try store.firstEnd(meter: request.meter, after: first.start)
            var edge = firstStored.map { calendar.bucket(endingAt: max($0, first.start + 1), request.resolution) } ?? first
            if request.resolution == .month { edge = first }  // months before the first interval: the meter's values
            while edge.start < lastEdge && edges.count < 200_000 {
                edges.append(edge)
                edge = calendar.bucket(endingAt: edge.end + 1, request.resolution)
            }
            let gaps = try store.gaps(meter: request.meter, from: first.start, to: lastEdge)
            let gapIndex = Dictionary(uniqueKeysWithValues: HistoryChannels.gapEnergies.enumerated().map {
                (HistoryChannels.energies.count + $0.offset, $0.offset)
            })
            var chunkStart = 0
            while chunkStart < edges.count && buckets.count <= perPage {
                let chunk = Array(edges[chunkStart..<min(edges.count, chunkStart + perPage + 1)])
                chunkStart += chunk.count
                for row in try store.aggregate(meter: request.meter, buckets: chunk, codes: codes) {
                    var bucket = Bucket(start: row.start, end: row.end, value: row.values, weight: codes.map { _ in 0 })
                    // The energy of a gap counts in the bucket where recording resumed: totals stay right.
                    for gap in gaps where gap.to >= row.start && gap.to < row.end {
                        for (k, code) in codes.enumerated() where code.kind == .delta {
                            guard let gi = gapIndex[code.column], gi < gap.deltas.count, let extra = gap.deltas[gi] else { continue }
                            bucket.value[k] = (bucket.value[k] ?? 0) + extra
                        }
                    }
                    buckets.append(bucket)
                }
            }
            if request.resolution == .month, codes.contains(where: { $0.settlement != nil }) {
                buckets = try backFill(buckets, request: request, first: first.start, lastEdge: lastEdge)
            }
            buckets = buckets.filter { $0.end > request.from && $0.start < request.to }
            more = buckets.count > perPage
            buckets = Array(buckets.prefix(perPage))
        }

        var series = codes.map { HistoryAnswer.Series(code: $0, entries: []) }
        for bucket in buckets {
            for (k, code) in codes.enumerated() {
                guard let v = bucket.value[k],
                      let val = MeterReadingBuilder.integer(v * code.factor, scale: code.scale) else { continue }
                series[k].entries.append(.init(ts: bucket.end, val: val, fromMeter: bucket.fromMeter))
            }
        }
        let lastTs = buckets.last?.end
        let gapTo = more ? (lastTs ?? request.to) : request.to
        let gaps = try store.gaps(meter: request.meter, from: request.from, to: gapTo).map { ($0.from, $0.to) }
        return HistoryAnswer(series: series, gaps: gaps, next: more ? lastTs : nil)
    }

    /// Months without any interval take the meter's own settlement values (register at the month's end, energy
    /// = end minus start), marked as coming from the meter.
    private func backFill(_ buckets: [Bucket], request: HistoryRequest, first: Int64, lastEdge: Int64) throws -> [Bucket] {
        let settlements = try store.settlements(meter: request.meter, from: first, to: lastEdge)
        guard settlements.count >= 1 else { return buckets }
        let byTime = Dictionary(settlements.map { ($0.at, $0.values) }, uniquingKeysWith: { a, _ in a })
        var out = buckets
        let known = Set(buckets.map(\.end))
        for settlement in settlements {
            // The month that ends at this settlement.
            let month = calendar.bucket(endingAt: settlement.at, .month)
            guard month.end == settlement.at, !known.contains(month.end) else { continue }
            var bucket = Bucket(start: month.start, end: month.end, value: request.codes.map { _ in nil },
                                weight: request.codes.map { _ in 0 }, fromMeter: true)
            for (k, code) in request.codes.enumerated() {
                guard let s = code.settlement else { continue }
                switch code.kind {
                case .register: bucket.value[k] = settlement.values[s]
                case .delta:
                    if let end = settlement.values[s], let start = byTime[month.start]?[s] { bucket.value[k] = end - start }
                default: break
                }
            }
            if bucket.value.contains(where: { $0 != nil }) { out.append(bucket) }
        }
        return out.sorted { $0.end < $1.end }
    }
}
