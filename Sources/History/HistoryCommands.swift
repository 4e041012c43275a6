import Dispatch
import FoundationEssentials
import KPM33B
import MeterService
import Platform

/// `meter_history` (POST /api) and `GET /history.csv`, over a `HistoryStore`.
///
/// Both run on their own queue (SQLite blocks on the card), never on the HTTP event loop.
public struct HistoryCommands: Sendable {
    public let store: HistoryStore?
    /// Why the store is missing (it could not be opened), for the error reply.
    public let unavailableReason: String
    /// The meters on the bus by Modbus address, first = default (Contract C: a lookup by address).
    public let meters: [(address: UInt8, link: any MeterLink)]
    public var calendar: BucketCalendar
    public var now: @Sendable () -> Int64
    public static let queue = DispatchQueue(label: "meterext.history.query")

    public init(store: HistoryStore?, unavailableReason: String = "", meters: [(address: UInt8, link: any MeterLink)],
                calendar: BucketCalendar = .local, now: @escaping @Sendable () -> Int64 = { wallClockSeconds() }) {
        self.store = store
        self.unavailableReason = unavailableReason
        self.meters = meters
        self.calendar = calendar
        self.now = now
    }

    public func register(into registry: inout CommandRegistry) {
        let commands = self
        registry.register("meter_history", queue: Self.queue, blocking: { request in commands.handle(request) })
    }

    /// The request's parameters: numbers or strings of digits (the description sends `"<unix s>"`).
    struct Parameters: Decodable {
        var from: Flexible?
        var to: Flexible?
        var resolution: Flexible?
        var obis: [Flexible]?
        var meter: Flexible?
    }

    /// A JSON string or number, kept as text.
    struct Flexible: Decodable {
        var text: String
        init(from decoder: Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let s = try? c.decode(String.self) { text = s; return }
            if let i = try? c.decode(Int64.self) { text = String(i); return }
            if let d = try? c.decode(Double.self) { text = String(d); return }
            throw DecodingError.typeMismatch(String.self, .init(codingPath: decoder.codingPath, debugDescription: ""))
        }
        init(_ text: String) { self.text = text }
    }

    public func handle(_ request: CommandRequest) -> CommandResult {
        let parameters: Parameters
        switch request.parameters(Parameters.self) {
        case .success(let p): parameters = p
        case .failure(let error): return .error(.invalidParameter, error.message)
        }
        switch validate(from: parameters.from?.text, to: parameters.to?.text, resolution: parameters.resolution?.text,
                        obis: parameters.obis?.map(\.text), meter: parameters.meter?.text) {
        case .failure(let error): return .error(.invalidParameter, error.message)
        case .success(let query):
            guard let store else { return .error(.storageFailed, "the history store is not available: \(unavailableReason)") }
            do {
                let answer = try HistoryQuery(store: store, calendar: calendar).run(query)
                return CommandResult(body: json(answer, query: query))
            } catch {
                return .error(.storageFailed, "the history could not be read: \(error)")
            }
        }
    }

    /// Checks every parameter; the message names what is wrong.
    public func validate(from: String?, to: String?, resolution: String?, obis: [String]?, meter: String?)
        -> Result<HistoryRequest, ParameterError>
    {
        func time(_ text: String?, _ name: String, _ fallback: Int64) -> Result<Int64, ParameterError> {
            guard let text else { return .success(fallback) }
            guard let v = Int64(text), v >= 0, v < 32_503_680_000 else {
                return .failure(ParameterError(message: "'\(name)' must be Unix seconds (an integer from 0 to 32503679999), got '\(text.prefix(40))'"))
            }
            return .success(v)
        }
        let end: Int64
        switch time(to, "to", now()) {
        case .failure(let e): return .failure(e)
        case .success(let v): end = v
        }
        let start: Int64
        switch time(from, "from", max(0, end - 86_400)) {
        case .failure(let e): return .failure(e)
        case .success(let v): start = v
        }
        guard start < end else {
            return .failure(ParameterError(message: "'from' (\(start)) must be earlier than 'to' (\(end))"))
        }
        var kind = HistoryResolution.interval
        if let resolution {
            guard let r = HistoryResolution(rawValue: resolution) else {
                return .failure(ParameterError(message: "'resolution' must be interval, hour, day or month, got '\(resolution.prefix(40))'"))
            }
            kind = r
        }
        var codes = HistoryCode.all
        if let obis {
            guard !obis.isEmpty else { return .failure(ParameterError(message: "'obis' is empty: leave it out for every code")) }
            codes = []
            for code in obis {
                guard let c = HistoryCode.byOBIS[code] else {
                    return .failure(ParameterError(message: "'obis': unknown code '\(code.prefix(40))' (the history has "
                        + HistoryCode.all.map(\.obis).joined(separator: ", ") + ")"))
                }
                if !codes.contains(where: { $0.obis == c.obis }) { codes.append(c) }
            }
        }
        guard let first = meters.first else { return .failure(ParameterError(message: "no meter is configured")) }
        var address = first.address
        if let meter {
            guard let a = UInt8(meter), meters.contains(where: { $0.address == a }) else {
                return .failure(ParameterError(message: "'meter' must be the Modbus address of a meter on this board ("
                    + meters.map { String($0.address) }.joined(separator: ", ") + "), got '\(meter.prefix(40))'"))
            }
            address = a
        }
        return .success(HistoryRequest(meter: address, from: start, to: end, resolution: kind, codes: codes))
    }

    /// The reply in the `meter_reading` shape, keys sorted like every other reply (`ReplyEncoder`).
    public func json(_ answer: HistoryAnswer, query: HistoryRequest) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(64 + answer.series.reduce(0) { $0 + 64 + $1.entries.count * 36 })
        func put(_ s: String) { out.append(contentsOf: s.utf8) }
        put(#"{"gaps":["#)
        for (i, gap) in answer.gaps.enumerated() {
            put(i == 0 ? "" : ",")
            put(#"{"from":"\#(gap.from)","to":"\#(gap.to)"}"#)
        }
        let link = meters.first(where: { $0.address == query.meter })?.link
        let meterID = link?.snapshot().serialNumber ?? ""
        put(#"],"meter":[{"address":"\#(query.meter)","data":["#)
        for (i, series) in answer.series.enumerated() {
            put(i == 0 ? "" : ",")
            put(#"{"OBIS":"\#(series.code.obis)","entry":["#)
            for (j, e) in series.entries.enumerated() {
                put(j == 0 ? "" : ",")
                put(e.fromMeter ? #"{"src":"meter","ts":"\#(e.ts)","val":"\#(e.val)"}"# : #"{"ts":"\#(e.ts)","val":"\#(e.val)"}"#)
            }
            put(#"],"scale":"\#(series.code.scale)","unit":"\#(series.code.unit)"}"#)
        }
        put(#"],"meterid":"\#(Self.escape(meterID))","resolution":"\#(query.resolution.rawValue)"}]"#)
        if let next = answer.next { put(#","next":"\#(next)""#) }
        put(#","result":"OK"}"#)
        return out
    }

    static func escape(_ s: String) -> String {
        String(s.unicodeScalars.filter { $0.value >= 0x20 && $0 != "\"" && $0 != "\\" }.map(Character.init))
    }

    // MARK: GET /history.csv

    /// `GET /history.csv?from=&to=&resolution=&obis=&meter=`: one row per timestamp, one column per code, physical
    /// values (Wh, W, V, A). Errors are plain text with status 400 (`invalid_param: …`).
    public func csv(query: String) -> (status: Int, contentType: String, body: [UInt8]) {
        var fields: [String: String] = [:]
        var obis: [String]? = nil
        for pair in query.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = Self.percentDecode(String(parts[0]))
            let value = parts.count > 1 ? Self.percentDecode(String(parts[1])) : ""
            if key == "obis" {
                obis = (obis ?? []) + value.split(separator: ",").map(String.init)
            } else {
                fields[key] = value
            }
        }
        let text = "text/plain; charset=utf-8"
        let request: HistoryRequest
        switch validate(from: fields["from"], to: fields["to"], resolution: fields["resolution"], obis: obis,
                        meter: fields["meter"]) {
        case .failure(let error): return (400, text, Array("invalid_param: \(error.message)\n".utf8))
        case .success(let r): request = r
        }
        guard let store else { return (500, text, Array("storage_failed: \(unavailableReason)\n".utf8)) }
        var rows: [Int64: [String]] = [:]
        var from = request.from
        var csvQuery = HistoryQuery(store: store, calendar: calendar)
        csvQuery.maxEntries = 50_000
        // The CSV is not paged: follow `next` up to a bound (400 days of 15-minute intervals and more).
        var pages = 0
        do {
            while pages < 40 {
                var page = request
                page.from = from
                let answer = try csvQuery.run(page)
                for (k, series) in answer.series.enumerated() {
                    let scale = series.code.scale
                    for e in series.entries {
                        var row = rows[e.ts] ?? Array(repeating: "", count: request.codes.count)
                        row[k] = Self.decimal(e.val, scale: scale)
                        rows[e.ts] = row
                    }
                }
                pages += 1
                guard let next = answer.next else { break }
                from = next
            }
        } catch {
            return (500, text, Array("storage_failed: \(error)\n".utf8))
        }
        var out = "ts," + request.codes.map { "\($0.obis) [\(Self.unitName($0.unit))]" }.joined(separator: ",") + "\r\n"
        for ts in rows.keys.sorted() {
            out += "\(ts)," + rows[ts]!.joined(separator: ",") + "\r\n"
        }
        return (200, "text/csv; charset=utf-8", Array(out.utf8))
    }

    static func decimal(_ val: Int64, scale: Int) -> String {
        guard scale < 0 else { return String(val) }
        let digits = -scale
        let negative = val < 0
        var s = String(val.magnitude)
        while s.count <= digits { s = "0" + s }
        let cut = s.index(s.endIndex, offsetBy: -digits)
        return (negative ? "-" : "") + s[..<cut] + "." + s[cut...]
    }

    static func unitName(_ unit: Int) -> String {
        switch unit {
        case 27: return "W"
        case 30: return "Wh"
        case 32: return "varh"
        case 33: return "A"
        case 35: return "V"
        default: return "\(unit)"
        }
    }

    static func percentDecode(_ s: String) -> String {
        var bytes: [UInt8] = []
        var it = Array(s.utf8)[...]
        while let b = it.popFirst() {
            if b == UInt8(ascii: "+") {
                bytes.append(0x20)
            } else if b == UInt8(ascii: "%"), it.count >= 2, let v = UInt8(String(decoding: it.prefix(2), as: UTF8.self), radix: 16) {
                bytes.append(v)
                it = it.dropFirst(2)
            } else {
                bytes.append(b)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
