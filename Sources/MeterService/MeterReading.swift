import KPM33B
import Synchronization

/// The `meter_reading` reply, in the MeterExtension #1's shape. Every value is a JSON string.
public struct MeterReadingReply: Encodable, Sendable {
    public var meter: [MeterBlock]
    public var result = "OK"

    public struct MeterBlock: Encodable, Sendable {
        /// The KPM33B serial number; "" until the parameters were read.
        public var meterid: String
        public var data: [DataEntry]
        /// online, stale, offline, starting (an extension; the original device sends no such field).
        public var status: String
        /// Why `data` is empty; absent when data is served.
        public var reason: String?
    }

    public struct DataEntry: Encodable, Sendable, Equatable {
        public var OBIS: String
        public var scale: String
        public var unit: String
        public var entry: [Sample]
    }

    public struct Sample: Encodable, Sendable, Equatable {
        public var ts: String
        public var val: String
    }
}

/// Turns snapshots into `meter_reading` replies. Pure: same snapshot, same bytes.
public struct MeterReadingBuilder: Sendable {
    public var calendar: any SettlementCalendar

    public init(calendar: any SettlementCalendar = LocalSettlementCalendar()) {
        self.calendar = calendar
    }

    /// `physical` as the integer `val` with `val × 10^scale ≈ physical`, or nil when it is not finite or does not
    /// fit an Int64. Total over every Double.
    public static func integer(_ physical: Double, scale: Int) -> Int64? {
        var v = physical
        if scale < 0 {
            for _ in 0..<(-scale) { v *= 10 }
        } else {
            for _ in 0..<scale { v /= 10 }
        }
        v = v.rounded()
        guard v.isFinite, v > -9.0e18, v < 9.0e18 else { return nil }
        return v == 0 ? 0 : Int64(v)  // no "-0"
    }

    /// The per-quantity conversion: a register value as the meter sent it → the OBIS `val` of `def`, or nil when
    /// the value is not served (outside the register's plausible range, not finite). Nil for definitions that do
    /// not come from a float register.
    public static func convert(_ value: Float, for def: OBISDefinition) -> Int64? {
        guard let register = def.register, Plausibility.isPlausible(value, at: register.address) else { return nil }
        let v = Double(value)
        switch def.source {
        case .value: return integer(v, scale: def.scale)
        case .importPart: return integer(max(v, 0), scale: def.scale)
        case .exportPart: return integer(max(-v, 0), scale: def.scale)
        case .kilo, .history: return integer(v * 1000, scale: def.scale)
        case .relayClosed, .operatingStatus: return nil
        }
    }

    /// The integer value and its timestamp for one definition, or nil when the snapshot doesn't have it or the
    /// meter sent an implausible value.
    public func sample(_ def: OBISDefinition, in snapshot: MeterSnapshot, operatingStatus: Int? = nil)
        -> (val: Int64, ts: Int64)?
    {
        func read(_ reg: FloatRegister) -> (Int64, Int64)? {
            guard case .plausible(let f) = snapshot.reading(reg), let i = Self.convert(f, for: def) else { return nil }
            return (i, snapshot.readTime(of: reg) ?? snapshot.publishedAt)
        }
        switch def.source {
        case .value(let reg), .importPart(let reg), .exportPart(let reg), .kilo(let reg):
            return read(reg)
        case .history(let run, let month):
            guard let (i, _) = read(run.register(month: month)), let readAt = snapshot.readTime(.history) else {
                return nil
            }
            return (i, calendar.settlement(month, before: readAt))
        case .relayClosed:
            guard let relay = snapshot.relay else { return nil }
            return (relay.closed ? 1 : 0, snapshot.readTime(.relay) ?? snapshot.publishedAt)
        case .operatingStatus:
            guard let code = operatingStatus else { return nil }
            return (Int64(code), snapshot.publishedAt)
        }
    }

    func entry(_ def: OBISDefinition, _ s: (val: Int64, ts: Int64)) -> MeterReadingReply.DataEntry {
        MeterReadingReply.DataEntry(
            OBIS: def.code.description, scale: String(def.scale), unit: String(def.unit),
            entry: [MeterReadingReply.Sample(ts: String(s.ts), val: String(s.val))])
    }

    public func reply(for snapshot: MeterSnapshot, operatingStatus: Int? = nil) -> MeterReadingReply {
        let meterid = snapshot.serialNumber ?? ""
        func empty(_ reason: String) -> MeterReadingReply {
            MeterReadingReply(meter: [.init(meterid: meterid, data: [], status: snapshot.health.rawValue, reason: reason)])
        }
        switch snapshot.health {
        case .starting:
            return empty("no reading yet: the meter has not been polled successfully since the service started")
        case .offline:
            let why = snapshot.lastError.map { $0.message } ?? "no answer"
            return empty("the meter is not answering: \(why)")
        case .online, .stale:
            break
        }
        var data: [MeterReadingReply.DataEntry] = []
        data.reserveCapacity(OBISTable.compatibility.count + 1 + OBISTable.extended.count + OBISTable.history.count)
        // Clients index the first twelve by position: all or none.
        for def in OBISTable.compatibility {
            guard let s = sample(def, in: snapshot) else {
                if let register = def.register, case .implausible(let v) = snapshot.reading(register) {
                    return empty("\(def.quantity): \(Plausibility.message(register, value: v))")
                }
                return empty("no complete reading yet (\(def.quantity) missing)")
            }
            data.append(entry(def, s))
        }
        if let s = sample(OBISTable.operatingStatus, in: snapshot, operatingStatus: operatingStatus) {
            data.append(entry(OBISTable.operatingStatus, s))
        }
        for def in OBISTable.extended + OBISTable.history {
            if let s = sample(def, in: snapshot) { data.append(entry(def, s)) }
        }
        return MeterReadingReply(meter: [.init(meterid: meterid, data: data, status: snapshot.health.rawValue, reason: nil)])
    }
}

/// What a `meter_reading` reply depends on: the snapshot's generation and the operating status code. While it is
/// unchanged, the reply's bytes are unchanged (`MeterReadingBuilder` is pure), so its encoding can be reused.
public struct ReadingVersion: Equatable, Hashable, Sendable {
    public var generation: UInt64
    public var status: Int?
    /// The other meters' status codes (issue 17: several meters on one bus); empty with one meter.
    public var otherStatuses: [Int?] = []

    public init(generation: UInt64, status: Int?) {
        self.generation = generation
        self.status = status
    }
}

/// Encodes each snapshot lazily and once: nothing is built while nobody asks (issue 18: the poll loop publishes a
/// snapshot every cycle), the first request after a new snapshot encodes it, and every request until the next
/// snapshot shares those bytes.
public final class MeterReadingCache: Sendable {
    private let builder: MeterReadingBuilder
    private let cached = Mutex<(key: ReadingVersion, body: [UInt8])?>(nil)
    private let encodings = Atomic<Int>(0)

    public init(builder: MeterReadingBuilder) {
        self.builder = builder
    }

    /// How many times a reply was encoded (for tests and the benchmark: once per snapshot that was asked for).
    public var encodeCount: Int { encodings.load(ordering: .relaxed) }

    /// The encoded reply (without `id`) for this snapshot.
    public func body(for snapshot: MeterSnapshot, operatingStatus: Int?) -> [UInt8] {
        let key = ReadingVersion(generation: snapshot.generation, status: operatingStatus)
        if let hit = cached.withLock({ $0?.key == key ? $0?.body : nil }) { return hit }
        encodings.add(1, ordering: .relaxed)
        let body = (try? ReplyEncoder.encode(builder.reply(for: snapshot, operatingStatus: operatingStatus)))
            ?? ReplyEncoder.errorBody(code: .internalError, message: "the reading could not be encoded")
        cached.withLock { $0 = (key, body) }
        return body
    }
}
