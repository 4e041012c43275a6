import CSQLite
import Glibc
import Platform
import Synchronization

/// Mean, minimum and maximum of one sampled quantity over an interval.
public struct IntervalStatistic: Sendable, Equatable {
    public var mean: Double, min: Double, max: Double
    public init(mean: Double, min: Double, max: Double) {
        (self.mean, self.min, self.max) = (mean, min, max)
    }
}

/// One completed interval as the aggregator hands it to the store (values in `HistoryChannels` order).
public struct IntervalRecord: Sendable, Equatable {
    public var meter: UInt8
    public var start: Int64
    public var end: Int64
    /// `HistoryChannels.energies` at the interval end (kWh, kvarh); nil when the meter did not give it.
    public var energies: [Double?]
    /// `HistoryChannels.gapEnergies` moved during the interval (end minus start; kWh, kvarh).
    public var deltas: [Double?]
    /// `HistoryChannels.statistics` over the interval; nil when no sample had it.
    public var statistics: [IntervalStatistic?]

    public init(meter: UInt8, start: Int64, end: Int64, energies: [Double?], deltas: [Double?],
                statistics: [IntervalStatistic?]) {
        self.meter = meter
        self.start = start
        self.end = end
        self.energies = energies
        self.deltas = deltas
        self.statistics = statistics
    }

    /// The value columns, `HistoryChannels.valueColumns` order.
    var columnValues: [Double?] {
        energies + deltas + statistics.flatMap { [$0?.mean, $0?.min, $0?.max] }
    }
}

/// A time without intervals (meter offline, board off, clock not trusted, clock step): from the end of the last
/// recorded interval to the start of the next one, with what the energy registers moved across it.
public struct GapRecord: Sendable, Equatable {
    public var meter: UInt8
    public var from: Int64
    public var to: Int64
    /// Why (`offline`, `restart`, `clock`, `untrusted`): for the log and the docs, not the API.
    public var reason: String
    /// `HistoryChannels.gapEnergies` at `to` minus at `from` (kWh, kvarh); nil when either end is unknown.
    public var deltas: [Double?]

    public init(meter: UInt8, from: Int64, to: Int64, reason: String, deltas: [Double?]) {
        self.meter = meter
        self.from = from
        self.to = to
        self.reason = reason
        self.deltas = deltas
    }

    /// `(obis, kWh)` of the energies that moved across the gap (Contract A: "a way to read gaps").
    public var values: [(obis: String, value: Double)] {
        zip(HistoryChannels.gapEnergies, deltas).compactMap { channel, delta in delta.map { (channel.obis, $0) } }
    }
}

/// One stored interval (Contract A: the MQTT uplink reads these in `seq` order).
public struct ProfileInterval: Sendable {
    public var meter: UInt8
    /// Strictly increasing per meter, never reused (a counter kept in the same transaction), also after the
    /// oldest rows were dropped.
    public var seq: Int64
    public var start: Int64
    /// A wall-clock multiple of the profile interval.
    public var end: Int64
    /// Physical units (kWh, kvarh, W, V, A); only values the meter gave.
    public var values: [(obis: String, value: Double)]
}

/// One settlement value the meter keeps in its own 12-month history (back-fill for months before installation).
public struct SettlementRecord: Sendable, Equatable {
    public var meter: UInt8
    /// Unix seconds of the settlement (00:00 on the 1st, board time zone).
    public var at: Int64
    /// Combined active energy total and T1…T4 at that moment (kWh), `HistoryStore.settlementOBIS` order.
    public var values: [Double?]
    public init(meter: UInt8, at: Int64, values: [Double?]) {
        self.meter = meter
        self.at = at
        self.values = values
    }
}

/// A row read for `meter_history`: the columns asked for, in the order asked.
struct StoredRow {
    var start: Int64
    var end: Int64
    var values: [Double?]
}

/// The load-profile store: one SQLite file in the state directory (`history.sqlite`).
///
/// WAL, `synchronous=FULL` (a commit is on the card before `append` returns: a power cut keeps every committed
/// interval; one fsync per interval costs nothing at one interval per 15 min), one transaction per interval, the
/// oldest rows dropped first once they are older than `retentionDays` or the file would pass `maxBytes`.
/// A file that cannot be opened or fails SQLite's quick check is moved aside (`history.sqlite.corrupt-<time>`) and
/// a fresh store is made: history is worth less than a running service.
///
/// Thread-safe: one writer connection and one reader connection, each behind its own lock (WAL lets readers run
/// while the writer commits). Every call blocks on the file: never call it on an event loop thread.
public final class HistoryStore: @unchecked Sendable {
    public let path: String
    public let retentionDays: Int
    public let maxBytes: Int64
    /// What happened when the store was opened (moved aside, created), for the service log.
    public private(set) var openNotes: [String] = []

    private let writer = Mutex(())
    private let reader = Mutex(())
    private let writerBox: SQLiteConnection
    private let readerBox: SQLiteConnection

    /// The settlement values the meter keeps (combined active energy total and T1…T4).
    public static let settlementOBIS = ["1-0:15.8.0.255", "1-0:15.8.1.255", "1-0:15.8.2.255", "1-0:15.8.3.255",
                                        "1-0:15.8.4.255"]
    static let schemaVersion = 1

    /// Contract A's initializer: the defaults (400 days, 32 MB).
    public convenience init(path: String) throws {
        try self.init(path: path, retentionDays: 400, maxBytes: 32 << 20)
    }

    public init(path: String, retentionDays: Int, maxBytes: Int64, now: Int64 = wallClockSeconds()) throws {
        self.path = path
        self.retentionDays = retentionDays
        self.maxBytes = maxBytes
        var notes: [String] = []
        let connection: SQLiteConnection
        do {
            connection = try Self.openChecked(path)
        } catch {
            // Damaged, not a database, or unreadable: keep the file for a post-mortem and start afresh.
            let aside = "\(path).corrupt-\(now)"
            for suffix in ["", "-wal", "-shm"] {
                if access(path + suffix, F_OK) == 0 { rename(path + suffix, aside + suffix) }
            }
            notes.append("history: the store \(path) could not be opened (\(error)): moved aside to \(aside), "
                + "starting a new one (earlier intervals are in that file)")
            connection = try Self.openChecked(path)
        }
        writerBox = connection
        readerBox = try SQLiteConnection(path: path)
        try readerBox.execute("PRAGMA query_only=1")
        openNotes = notes
    }

    private static func openChecked(_ path: String) throws -> SQLiteConnection {
        let db = try SQLiteConnection(path: path)
        let check = try db.text("PRAGMA quick_check")
        guard check == "ok" else {
            throw SQLiteError(code: SQLITE_CORRUPT, message: "quick_check: \(check.prefix(200))", operation: "check \(path)")
        }
        // WAL: a commit appends to the log, readers never block the writer, and a torn write at a power cut only
        // loses the uncommitted tail. FULL: the log is fsynced at every commit (NORMAL would only sync at
        // checkpoints, so a power cut could lose the last committed intervals).
        let mode = try db.text("PRAGMA journal_mode=WAL")
        guard mode.lowercased() == "wal" else {
            throw SQLiteError(code: SQLITE_ERROR, message: "journal_mode is \(mode), not wal", operation: "open \(path)")
        }
        try db.execute("""
            PRAGMA synchronous=FULL;
            PRAGMA journal_size_limit=1048576;
            """)
        try db.transaction {
            try db.execute(schemaSQL)
            try db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema', '\(schemaVersion)')")
            // Stores written before the hourly roll-up existed: build it once from their intervals.
            if try db.integer("SELECT COUNT(*) FROM meta WHERE key = 'hourly'") == 0 {
                try rebuildHours(meter: nil, after: Int64.min, upTo: Int64.max, db)
                try db.execute("INSERT INTO meta(key, value) VALUES ('hourly', '1')")
            }
        }
        return db
    }

    static var schemaSQL: String {
        let values = HistoryChannels.valueColumns.map { "\($0) REAL" }.joined(separator: ", ")
        let gapValues = HistoryChannels.gapEnergies.map { "d\($0.c)_\($0.e) REAL" }.joined(separator: ", ")
        let hourlyValues = hourlyColumns.map { "\($0) REAL" }.joined(separator: ", ")
        return """
            CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS interval (
                meter INTEGER NOT NULL,
                "end" INTEGER NOT NULL,
                seq INTEGER NOT NULL,
                start INTEGER NOT NULL,
                \(values),
                PRIMARY KEY (meter, "end")) WITHOUT ROWID;
            CREATE UNIQUE INDEX IF NOT EXISTS interval_by_seq ON interval (meter, seq);
            CREATE INDEX IF NOT EXISTS interval_charts ON interval (meter, "end", start, d1_0, d2_0, d15_0, p16_mean, e1_0, e2_0);
            CREATE TABLE IF NOT EXISTS hourly (
                meter INTEGER NOT NULL,
                "end" INTEGER NOT NULL,
                last INTEGER NOT NULL,
                \(hourlyValues),
                PRIMARY KEY (meter, "end")) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS seq_counter (meter INTEGER PRIMARY KEY, last INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS gap (
                meter INTEGER NOT NULL,
                "from" INTEGER NOT NULL,
                "to" INTEGER NOT NULL,
                reason TEXT NOT NULL,
                \(gapValues),
                PRIMARY KEY (meter, "from"));
            CREATE TABLE IF NOT EXISTS settlement (
                meter INTEGER NOT NULL,
                at INTEGER NOT NULL,
                s0 REAL, s1 REAL, s2 REAL, s3 REAL, s4 REAL,
                PRIMARY KEY (meter, at));
            """
    }

    private func write<T>(_ body: (SQLiteConnection) throws -> T) throws -> T {
        try writer.withLock { _ in try body(writerBox) }
    }

    private func read<T>(_ body: (SQLiteConnection) throws -> T) throws -> T {
        try reader.withLock { _ in try body(readerBox) }
    }

    // MARK: writing

    /// Stores one interval (and the gap before it, if any) in one transaction, then drops what is too old.
    /// Returns the interval's `seq`. An interval whose end is already stored for this meter is ignored
    /// (returns the stored seq): a replay after a crash never duplicates.
    @discardableResult
    public func append(_ interval: IntervalRecord, gap: GapRecord? = nil) throws -> Int64 {
        try write { db in
            try db.transaction {
                if let gap { try insert(gap, db) }
                let existing = try db.prepare(#"SELECT seq FROM interval WHERE meter = ? AND "end" = ?"#)
                existing.bind(1, Int64(interval.meter))
                existing.bind(2, interval.end)
                if try existing.step() { return existing.int64(0) }
                let seq = try insertRow(interval, db)
                let hour = Self.hourEnd(interval.end)
                try rebuildHours(meter: interval.meter, after: hour - 3600, upTo: hour, db)
                try enforceBounds(newest: interval.end, db)
                return seq
            }
        }
    }

    /// Many intervals in one transaction (imports, the 400-day fill of the size test and the benchmark); the
    /// recorder never uses it.
    public func append(contentsOf intervals: [IntervalRecord]) throws {
        try write { db in
            try db.transaction {
                let exists = try db.prepare(#"SELECT 1 FROM interval WHERE meter = ? AND "end" = ?"#)
                for interval in intervals {
                    exists.reset()
                    exists.bind(1, Int64(interval.meter))
                    exists.bind(2, interval.end)
                    if try exists.step() { continue }
                    _ = try insertRow(interval, db)
                }
                for meter in Set(intervals.map(\.meter)) {
                    let ends = intervals.filter { $0.meter == meter }.map(\.end)
                    try rebuildHours(meter: meter, after: Self.hourEnd(ends.min()!) - 3600, upTo: Self.hourEnd(ends.max()!), db)
                }
                if let newest = intervals.map(\.end).max() { try enforceBounds(newest: newest, db) }
            }
            // A big transaction leaves a big log: fold it into the database now (the recorder's one-interval
            // commits never need this; SQLite checkpoints them itself).
            try db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        }
    }

    /// Inserts one interval with the meter's next seq (a counter per meter in the same transaction: a seq is
    /// never handed out twice, also after the rows that had it were dropped).
    private func insertRow(_ interval: IntervalRecord, _ db: SQLiteConnection) throws -> Int64 {
        let counter = try db.prepare("INSERT INTO seq_counter (meter, last) VALUES (?, 1) "
            + "ON CONFLICT (meter) DO UPDATE SET last = last + 1 RETURNING last")
        counter.bind(1, Int64(interval.meter))
        guard try counter.step() else { throw SQLiteError(code: SQLITE_ERROR, message: "no seq", operation: "seq") }
        let seq = counter.int64(0)
        try counter.run()
        let columns = HistoryChannels.valueColumns
        let insert = try db.prepare("INSERT INTO interval (meter, \"end\", seq, start, \(columns.joined(separator: ", "))) "
            + "VALUES (?, ?, ?, ?, " + Array(repeating: "?", count: columns.count).joined(separator: ", ") + ")")
        insert.bind(1, Int64(interval.meter))
        insert.bind(2, interval.end)
        insert.bind(3, seq)
        insert.bind(4, interval.start)
        for (i, value) in interval.columnValues.enumerated() { insert.bind(Int32(5 + i), value) }
        try insert.run()
        return seq
    }

    /// Stores a gap on its own (the meter went offline and the service stops before it comes back).
    public func append(gap: GapRecord) throws {
        try write { db in try db.transaction { try insert(gap, db) } }
    }

    private func insert(_ gap: GapRecord, _ db: SQLiteConnection) throws {
        let columns = HistoryChannels.gapEnergies.map { "d\($0.c)_\($0.e)" }
        let sql = "INSERT OR REPLACE INTO gap (meter, \"from\", \"to\", reason, \(columns.joined(separator: ", "))) VALUES (?, ?, ?, ?, "
            + Array(repeating: "?", count: columns.count).joined(separator: ", ") + ")"
        let statement = try db.prepare(sql)
        statement.bind(1, Int64(gap.meter))
        statement.bind(2, gap.from)
        statement.bind(3, gap.to)
        statement.bind(4, gap.reason)
        for i in 0..<columns.count { statement.bind(Int32(5 + i), i < gap.deltas.count ? gap.deltas[i] : nil) }
        try statement.run()
    }

    /// Drops rows older than the retention, then the oldest rows while the file (database + log) is over
    /// `maxBytes`. Freed pages are reused by later inserts, so the file stops growing at the bound.
    private func enforceBounds(newest: Int64, _ db: SQLiteConnection) throws {
        let cutoff = newest - Int64(retentionDays) * 86_400
        var dropped = 0
        for table in [#"interval WHERE "end" < ?"#, #"gap WHERE "to" < ?"#] {
            let statement = try db.prepare("DELETE FROM \(table)")
            statement.bind(1, cutoff)
            try statement.run()
            if table.hasPrefix("interval") { dropped = db.changes }
        }
        // Pages in use (not the file size: freed pages stay in the file and are reused).
        let pageSize = try db.integer("PRAGMA page_size")
        var used = (try db.integer("PRAGMA page_count") - (try db.integer("PRAGMA freelist_count"))) * pageSize
        // Room for the write-ahead log (journal_size_limit) besides the database pages.
        let budget = maxBytes - (1 << 20) - 4 * pageSize
        while used > budget {
            let batch = try db.prepare(#"DELETE FROM interval WHERE ("meter", "end") IN (SELECT meter, "end" FROM interval ORDER BY "end" LIMIT 96)"#)
            try batch.run()
            if db.changes == 0 { break }
            dropped += db.changes
            used = (try db.integer("PRAGMA page_count") - (try db.integer("PRAGMA freelist_count"))) * pageSize
        }
        if dropped > 0 { try trimHours(db) }
    }

    // MARK: hourly roll-up

    /// Columns of the `hourly` roll-up after `meter, end, last`: energies at the hour's last interval end, energy
    /// per hour (`SUM`), then per statistic the duration-weighted sum, the duration with a value, min and max
    /// (a mean over any run of whole hours is `SUM(sw) / SUM(w)`, exactly the interval table's formula).
    static let hourlyColumns: [String] = HistoryChannels.energies.map(\.column)
        + HistoryChannels.gapEnergies.map { "d\($0.c)_\($0.e)" }
        + HistoryChannels.statistics.flatMap { [$0.column + "_sw", $0.column + "_w", $0.column + "_min", $0.column + "_max"] }

    /// The end of the UTC hour `(h - 3600, h]` that an interval ending at `end` belongs to.
    static func hourEnd(_ end: Int64) -> Int64 {
        let q = end / 3600
        return (end % 3600 > 0 ? q + 1 : q) * 3600
    }

    /// Recomputes the hourly rows with `after < end <= upTo` (hour ends) from the intervals in them, for one meter
    /// or all: run in the transaction that changed those intervals, so the roll-up never disagrees with them.
    private static func rebuildHours(meter: UInt8?, after: Int64, upTo: Int64, _ db: SQLiteConnection) throws {
        let filter = (meter == nil ? "meter >= ?1" : "meter = ?1") + #" AND "end" > ?2 AND "end" <= ?3"#
        func bindAll(_ s: SQLiteStatement) {
            s.bind(1, Int64(meter ?? 0))
            s.bind(2, after)
            s.bind(3, upTo)
        }
        let delete = try db.prepare("DELETE FROM hourly WHERE \(filter)")
        bindAll(delete)
        try delete.run()
        var names: [String] = [], sums: [String] = []
        for e in HistoryChannels.gapEnergies {
            names.append("d\(e.c)_\(e.e)")
            sums.append("SUM(d\(e.c)_\(e.e))")
        }
        for s in HistoryChannels.statistics {
            let c = s.column + "_mean"
            names += [s.column + "_sw", s.column + "_w", s.column + "_min", s.column + "_max"]
            sums += ["SUM(\(c) * (\"end\" - start))", "SUM(CASE WHEN \(c) IS NOT NULL THEN \"end\" - start END)",
                     "MIN(\(s.column)_min)", "MAX(\(s.column)_max)"]
        }
        let hour = #"(CASE WHEN "end" % 3600 > 0 THEN ("end" / 3600 + 1) * 3600 ELSE "end" / 3600 * 3600 END)"#
        let insert = try db.prepare(#"INSERT INTO hourly (meter, "end", last, "# + names.joined(separator: ", ") + ") "
            + "SELECT meter, \(hour) AS h, MAX(\"end\"), " + sums.joined(separator: ", ")
            + " FROM interval WHERE \(filter) GROUP BY meter, h")
        bindAll(insert)
        try insert.run()
        let registers = HistoryChannels.energies.map(\.column)
        let update = try db.prepare("UPDATE hourly SET (\(registers.joined(separator: ", "))) = (SELECT "
            + registers.map { "i." + $0 }.joined(separator: ", ")
            + #" FROM interval i WHERE i.meter = hourly.meter AND i."end" = hourly.last) WHERE "# + filter)
        bindAll(update)
        try update.run()
    }

    private func rebuildHours(meter: UInt8?, after: Int64, upTo: Int64, _ db: SQLiteConnection) throws {
        try Self.rebuildHours(meter: meter, after: after, upTo: upTo, db)
    }

    /// After the oldest intervals were dropped: drops the hours before each meter's oldest interval and recomputes
    /// the hour it lies in (it may have lost some of its intervals).
    private func trimHours(_ db: SQLiteConnection) throws {
        let meters = try db.prepare("SELECT DISTINCT meter FROM hourly")
        var list: [Int64] = []
        while try meters.step() { list.append(meters.int64(0)) }
        for meter in list {
            let first = try db.prepare(#"SELECT MIN("end") FROM interval WHERE meter = ?"#)
            first.bind(1, meter)
            _ = try first.step()
            let oldest = first.double(0).map { _ in first.int64(0) }
            let hour = oldest.map(Self.hourEnd) ?? Int64.max
            let drop = try db.prepare(#"DELETE FROM hourly WHERE meter = ? AND "end" < ?"#)
            drop.bind(1, meter)
            drop.bind(2, hour)
            try drop.run()
            if oldest != nil { try rebuildHours(meter: UInt8(meter), after: hour - 3600, upTo: hour, db) }
        }
    }

    /// Stores the meter's settlement values (back-fill for months before the first interval). Existing rows are
    /// replaced: the meter's values are the same each time it is read.
    public func storeSettlements(_ records: [SettlementRecord]) throws {
        guard !records.isEmpty else { return }
        try write { db in
            try db.transaction {
                let statement = try db.prepare(
                    "INSERT OR REPLACE INTO settlement (meter, at, s0, s1, s2, s3, s4) VALUES (?, ?, ?, ?, ?, ?, ?)")
                for record in records {
                    statement.reset()
                    statement.bind(1, Int64(record.meter))
                    statement.bind(2, record.at)
                    for i in 0..<5 { statement.bind(Int32(3 + i), i < record.values.count ? record.values[i] : nil) }
                    try statement.run()
                }
            }
        }
    }

    // MARK: reading

    /// Contract A: intervals with `seq > afterSeq`, ascending, at most `limit`.
    public func intervals(meter: UInt8, afterSeq: Int64, limit: Int) throws -> [ProfileInterval] {
        try read { db in
            let columns = HistoryChannels.valueColumns
            let statement = try db.prepare("SELECT seq, start, \"end\", \(columns.joined(separator: ", ")) FROM interval "
                + "WHERE meter = ? AND seq > ? ORDER BY seq LIMIT ?")
            statement.bind(1, Int64(meter))
            statement.bind(2, afterSeq)
            statement.bind(3, Int64(max(0, limit)))
            var out: [ProfileInterval] = []
            while try statement.step() {
                var values: [(obis: String, value: Double)] = []
                for (i, obis) in HistoryChannels.valueOBIS.enumerated() {
                    if let v = statement.double(Int32(3 + i)) { values.append((obis, v)) }
                }
                out.append(ProfileInterval(meter: meter, seq: statement.int64(0), start: statement.int64(1),
                                           end: statement.int64(2), values: values))
            }
            return out
        }
    }

    /// Contract A: the highest seq stored for `meter`, 0 when none.
    public func lastSeq(meter: UInt8) throws -> Int64 {
        try read { db in
            let statement = try db.prepare("SELECT COALESCE(MAX(seq), 0) FROM interval WHERE meter = ?")
            // The highest seq still stored (not the counter: a dropped row is not there to be read).
            statement.bind(1, Int64(meter))
            _ = try statement.step()
            return statement.int64(0)
        }
    }

    /// Gaps of `meter` that overlap [from, to], ascending.
    public func gaps(meter: UInt8, from: Int64, to: Int64) throws -> [GapRecord] {
        try read { db in
            let columns = HistoryChannels.gapEnergies.map { "d\($0.c)_\($0.e)" }
            let statement = try db.prepare("SELECT \"from\", \"to\", reason, \(columns.joined(separator: ", ")) FROM gap "
                + "WHERE meter = ? AND \"to\" > ? AND \"from\" < ? ORDER BY \"from\"")
            statement.bind(1, Int64(meter))
            statement.bind(2, from)
            statement.bind(3, to)
            var out: [GapRecord] = []
            while try statement.step() {
                out.append(GapRecord(meter: meter, from: statement.int64(0), to: statement.int64(1),
                                     reason: statement.text(2) ?? "",
                                     deltas: (0..<columns.count).map { statement.double(Int32(3 + $0)) }))
            }
            return out
        }
    }

    /// The newest stored interval of `meter` (the recorder resumes from it after a restart).
    public func lastInterval(meter: UInt8) throws -> IntervalRecord? {
        try read { db in
            let rows = try rows(meter: meter, endAfter: Int64.min, endAtMost: Int64.max,
                                columns: Array(HistoryChannels.valueColumns.indices), newestFirst: true, limit: 1, db)
            guard let row = rows.first else { return nil }
            let n = HistoryChannels.energies.count, d = HistoryChannels.gapEnergies.count
            let stats = HistoryChannels.statistics.indices.map { i -> IntervalStatistic? in
                let base = n + d + 3 * i
                guard let mean = row.values[base], let lo = row.values[base + 1], let hi = row.values[base + 2] else {
                    return nil
                }
                return IntervalStatistic(mean: mean, min: lo, max: hi)
            }
            return IntervalRecord(meter: meter, start: row.start, end: row.end,
                                  energies: Array(row.values[0..<n]), deltas: Array(row.values[n..<(n + d)]),
                                  statistics: stats)
        }
    }

    /// Rows with `endAfter < end <= endAtMost`, only the value columns `columns` (indices into
    /// `HistoryChannels.valueColumns`).
    func rows(meter: UInt8, endAfter: Int64, endAtMost: Int64, columns: [Int], newestFirst: Bool = false,
              limit: Int = Int.max, startBefore: Int64 = Int64.max) throws -> [StoredRow] {
        try read { db in
            try rows(meter: meter, endAfter: endAfter, endAtMost: endAtMost, columns: columns,
                     newestFirst: newestFirst, limit: limit, startBefore: startBefore, db)
        }
    }

    private func rows(meter: UInt8, endAfter: Int64, endAtMost: Int64, columns: [Int], newestFirst: Bool,
                      limit: Int, startBefore: Int64 = Int64.max, _ db: SQLiteConnection) throws -> [StoredRow] {
        let names = columns.map { HistoryChannels.valueColumns[$0] }
        let select = (["start", "\"end\""] + names).joined(separator: ", ")
        let statement = try db.prepare("SELECT \(select) FROM interval WHERE meter = ? AND \"end\" > ? AND \"end\" <= ? "
            + "AND start < ? ORDER BY \"end\" \(newestFirst ? "DESC" : "ASC") LIMIT ?")
        statement.bind(1, Int64(meter))
        statement.bind(2, endAfter)
        statement.bind(3, endAtMost)
        statement.bind(4, startBefore)
        statement.bind(5, Int64(min(limit, Int(Int64.max))))
        var out: [StoredRow] = []
        while try statement.step() {
            out.append(StoredRow(start: statement.int64(0), end: statement.int64(1),
                                 values: (0..<names.count).map { statement.double(Int32(2 + $0)) }))
        }
        return out
    }

    /// Aggregates the intervals of `meter` into `buckets` (each `(start, end]`) in SQL, one value per bucket and
    /// code: the register at the bucket's last interval end, the sum of interval energies, the duration-weighted
    /// mean, the minimum, the maximum. Only buckets that hold intervals are returned, ascending.
    func aggregate(meter: UInt8, buckets: [(start: Int64, end: Int64)], codes: [HistoryCode]) throws
        -> [(start: Int64, end: Int64, values: [Double?])]
    {
        guard !buckets.isEmpty else { return [] }
        if useHourly && buckets.allSatisfy({ $0.start % 3600 == 0 && $0.end % 3600 == 0 }) {
            return try aggregateHours(meter: meter, buckets: buckets, codes: codes)
        }
        return try aggregateIntervals(meter: meter, buckets: buckets, codes: codes)
    }

    /// The bucket edges as the JSON array `?2` of `bucketCTE` reads, and per requested code either an aggregate over
    /// the bucket's rows of `table` (`mean` gives the mean's SQL for a `_mean` column: the two tables keep means
    /// differently) or a register column read at the bucket's last row. Shared by both aggregations.
    private static func bucketPlan(_ buckets: [(start: Int64, end: Int64)], _ codes: [HistoryCode], table: String,
                                   mean: (String) -> String)
        -> (edges: String, aggregates: [(index: Int, sql: String)], registers: [(index: Int, column: String)])
    {
        let edges = "[" + buckets.map { "[\($0.start),\($0.end)]" }.joined(separator: ",") + "]"
        let names = HistoryChannels.valueColumns
        var aggregates: [(index: Int, sql: String)] = []
        var registers: [(index: Int, column: String)] = []
        for (k, code) in codes.enumerated() {
            let c = table + "." + names[code.column]
            switch code.kind {
            case .register: registers.append((k, c))
            case .delta: aggregates.append((k, "SUM(\(c))"))
            case .mean: aggregates.append((k, mean(names[code.column])))
            case .min: aggregates.append((k, "MIN(\(c))"))
            case .max: aggregates.append((k, "MAX(\(c))"))
            }
        }
        return (edges, aggregates, registers)
    }

    /// The buckets as rows `b(s, e)`, from the JSON array bound to `?2`.
    private static let bucketCTE = "WITH b(s, e) AS MATERIALIZED (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?2))"

    /// Off only in the test that compares the roll-up with the straightforward aggregation.
    var useHourly = true

    /// Buckets made of whole UTC hours (every time zone with a whole-hour offset, DST included), from the
    /// `hourly` roll-up: a quarter of the rows (a 24th for registers) of the interval table, same formulas.
    private func aggregateHours(meter: UInt8, buckets: [(start: Int64, end: Int64)], codes: [HistoryCode]) throws
        -> [(start: Int64, end: Int64, values: [Double?])]
    {
        let (edges, aggregates, registers) = Self.bucketPlan(buckets, codes, table: "h") { column in
            let base = "h." + String(column.dropLast("_mean".count))
            return "SUM(\(base)_sw) / SUM(\(base)_w)"
        }
        return try read { db in
            var byEnd: [Int64: (start: Int64, values: [Double?])] = [:]
            let first = try db.prepare("\(Self.bucketCTE) SELECT b.s, b.e, MAX(h.\"end\")" + aggregates.map { ", " + $0.sql }.joined()
                + " FROM b CROSS JOIN hourly h ON h.meter = ?1 AND h.\"end\" > b.s AND h.\"end\" <= b.e GROUP BY b.e")
            first.bind(1, Int64(meter))
            first.bind(2, edges)
            var lastHour: [Int64: Int64] = [:]
            while try first.step() {
                var values = [Double?](repeating: nil, count: codes.count)
                for (n, a) in aggregates.enumerated() { values[a.index] = first.double(Int32(3 + n)) }
                byEnd[first.int64(1)] = (first.int64(0), values)
                lastHour[first.int64(1)] = first.int64(2)
            }
            if !registers.isEmpty && !lastHour.isEmpty {
                // The registers of each bucket's last hour row are those at the bucket's last interval end.
                let second = try db.prepare("SELECT " + registers.map(\.column).joined(separator: ", ")
                    + " FROM hourly h WHERE h.meter = ?1 AND h.\"end\" = ?2")
                for (end, hour) in lastHour {
                    second.reset()
                    second.bind(1, Int64(meter))
                    second.bind(2, hour)
                    guard try second.step() else { continue }
                    for (n, r) in registers.enumerated() { byEnd[end]!.values[r.index] = second.double(Int32(n)) }
                }
            }
            return byEnd.keys.sorted().map { (byEnd[$0]!.start, $0, byEnd[$0]!.values) }
        }
    }

    /// The straightforward aggregation over the interval table (buckets not made of whole UTC hours).
    private func aggregateIntervals(meter: UInt8, buckets: [(start: Int64, end: Int64)], codes: [HistoryCode]) throws
        -> [(start: Int64, end: Int64, values: [Double?])]
    {
        let (edges, aggregates, registers) = Self.bucketPlan(buckets, codes, table: "i") { column in
            let c = "i." + column
            return "SUM(\(c) * (i.\"end\" - i.start)) / SUM(CASE WHEN \(c) IS NOT NULL THEN i.\"end\" - i.start END)"
        }
        return try read { db in
            var byEnd: [Int64: (start: Int64, values: [Double?])] = [:]
            let first = try db.prepare("\(Self.bucketCTE) SELECT b.s, b.e" + aggregates.map { ", " + $0.sql }.joined()
                + " FROM b CROSS JOIN interval i ON i.meter = ?1 AND i.\"end\" > b.s AND i.\"end\" <= b.e GROUP BY b.e")
            first.bind(1, Int64(meter))
            first.bind(2, edges)
            while try first.step() {
                var values = [Double?](repeating: nil, count: codes.count)
                for (n, a) in aggregates.enumerated() { values[a.index] = first.double(Int32(2 + n)) }
                byEnd[first.int64(1)] = (first.int64(0), values)
            }
            if !registers.isEmpty {
                let second = try db.prepare("\(Self.bucketCTE), last(s, e, le) AS (SELECT b.s, b.e, (SELECT MAX(\"end\") FROM "
                    + "interval WHERE meter = ?1 AND \"end\" > b.s AND \"end\" <= b.e) FROM b) SELECT last.s, last.e"
                    + registers.map { ", " + $0.column }.joined()
                    + " FROM last CROSS JOIN interval i ON i.meter = ?1 AND i.\"end\" = last.le")
                second.bind(1, Int64(meter))
                second.bind(2, edges)
                while try second.step() {
                    let end = second.int64(1)
                    var entry = byEnd[end] ?? (second.int64(0), [Double?](repeating: nil, count: codes.count))
                    for (n, r) in registers.enumerated() { entry.values[r.index] = second.double(Int32(2 + n)) }
                    byEnd[end] = entry
                }
            }
            return byEnd.keys.sorted().map { (byEnd[$0]!.start, $0, byEnd[$0]!.values) }
        }
    }

    /// The meter's settlement values of `meter` with `from <= at <= to`, ascending.
    public func settlements(meter: UInt8, from: Int64, to: Int64) throws -> [SettlementRecord] {
        try read { db in
            let statement = try db.prepare(
                "SELECT at, s0, s1, s2, s3, s4 FROM settlement WHERE meter = ? AND at >= ? AND at <= ? ORDER BY at")
            statement.bind(1, Int64(meter))
            statement.bind(2, from)
            statement.bind(3, to)
            var out: [SettlementRecord] = []
            while try statement.step() {
                out.append(SettlementRecord(meter: meter, at: statement.int64(0),
                                            values: (1...5).map { statement.double(Int32($0)) }))
            }
            return out
        }
    }

    /// The first stored interval end of `meter` after `t`, nil when none.
    func firstEnd(meter: UInt8, after t: Int64) throws -> Int64? {
        try read { db in
            let statement = try db.prepare(#"SELECT MIN("end") FROM interval WHERE meter = ? AND "end" > ?"#)
            statement.bind(1, Int64(meter))
            statement.bind(2, t)
            guard try statement.step() else { return nil }
            return statement.double(0).map { _ in statement.int64(0) }
        }
    }

    /// Bytes the database and its log take on disk now.
    public func fileBytes() -> Int64 {
        var total: Int64 = 0
        for suffix in ["", "-wal"] {
            var info = stat()
            if stat(path + suffix, &info) == 0 { total += Int64(info.st_size) }
        }
        return total
    }
}
