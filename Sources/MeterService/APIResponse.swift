import FoundationEssentials

/// A finished reply to one `/api` request: what the HTTP layer writes.
public struct APIResponse: Sendable {
    /// HTTP status code.
    public var status: Int
    /// The complete JSON body, `id` included.
    public var body: [UInt8]
    /// Runs once the reply has been written and flushed (restart, factory reset), off the HTTP event loop.
    public var afterReply: (@Sendable () -> Void)?

    public init(status: Int, body: [UInt8], afterReply: (@Sendable () -> Void)? = nil) {
        self.status = status
        self.body = body
        self.afterReply = afterReply
    }
}

/// What a command handler returns: a JSON object without `id` (the dispatcher adds it).
public struct CommandResult: Sendable {
    public var status: Int
    /// An encoded JSON object (`{...}`), produced by `ReplyEncoder`.
    public var body: [UInt8]
    public var afterReply: (@Sendable () -> Void)?

    public init(status: Int = 200, body: [UInt8], afterReply: (@Sendable () -> Void)? = nil) {
        self.status = status
        self.body = body
        self.afterReply = afterReply
    }

    /// `value` must encode as a JSON object; add `"result":"OK"` yourself (see `OKReply`).
    public static func ok<T: Encodable>(_ value: T, afterReply: (@Sendable () -> Void)? = nil) -> CommandResult {
        do {
            return CommandResult(body: try ReplyEncoder.encode(value), afterReply: afterReply)
        } catch {
            return .error(.internalError, "the reply could not be encoded")
        }
    }

    public static func error(_ code: APIErrorCode, _ message: String) -> CommandResult {
        CommandResult(status: code.httpStatus, body: ReplyEncoder.errorBody(code: code, message: message))
    }
}

/// Error codes of `{"result":"ERROR","error":"<code>","message":"..."}` replies and their HTTP status.
public struct APIErrorCode: Sendable, Hashable, RawRepresentable, CustomStringConvertible {
    public let rawValue: String
    public let httpStatus: Int

    public init(rawValue: String) { self.init(rawValue, status: 400) }
    public init(_ rawValue: String, status: Int) {
        self.rawValue = rawValue
        self.httpStatus = status
    }
    public var description: String { rawValue }

    /// The description's spelling, kept on purpose: clients match it. HTTP 200 because clients treat non-2xx
    /// as a transport failure and only then look at nothing.
    public static let unknownCommand = APIErrorCode("unkown_cmd", status: 200)
    public static let invalidJSON = APIErrorCode("invalid_json", status: 400)
    public static let missingCommand = APIErrorCode("missing_cmd", status: 400)
    public static let wrongType = APIErrorCode("wrong_type", status: 400)
    public static let invalidParameter = APIErrorCode("invalid_param", status: 400)
    public static let invalidKey = APIErrorCode("invalid_key", status: 400)
    public static let notAvailable = APIErrorCode("not_available", status: 501)
    public static let noData = APIErrorCode("no_data", status: 503)
    public static let noNetwork = APIErrorCode("no_network", status: 503)
    public static let meterOffline = APIErrorCode("meter_offline", status: 503)
    public static let relayFailed = APIErrorCode("relay_failed", status: 502)
    public static let relayMismatch = APIErrorCode("relay_mismatch", status: 502)
    public static let storageFailed = APIErrorCode("storage_failed", status: 500)
    public static let internalError = APIErrorCode("internal_error", status: 500)
    // HTTP-level errors (written by the HTTP adapter, same body shape).
    public static let notFound = APIErrorCode("not_found", status: 404)
    public static let methodNotAllowed = APIErrorCode("method_not_allowed", status: 405)
    public static let requestTimeout = APIErrorCode("request_timeout", status: 408)
    public static let bodyTooLarge = APIErrorCode("body_too_large", status: 413)
    public static let badRequest = APIErrorCode("bad_request", status: 400)
    /// A protected command or upload without a valid token (the HTTP layer adds `WWW-Authenticate: Bearer`).
    public static let unauthorized = APIErrorCode("unauthorized", status: 401)
    public static let tooManyConnections = APIErrorCode("too_many_connections", status: 503)
}

/// The one place JSON replies are encoded.
///
/// FoundationEssentials' JSONEncoder does not keep keys in declaration order, so every reply is encoded with
/// sorted keys (byte-stable, cacheable, testable) and the `id` is spliced in last, which matches the
/// description's `..."result":"OK","id":"123"}`. JSON objects are unordered; clients index arrays, not keys.
public enum ReplyEncoder {
    static func makeEncoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }

    public static func encode<T: Encodable>(_ value: T) throws -> [UInt8] {
        Array(try makeEncoder().encode(value))
    }

    struct ErrorReply: Encodable {
        let result = "ERROR"
        let error: String
        let message: String
    }

    public static func errorBody(code: APIErrorCode, message: String) -> [UInt8] {
        // Encoding two strings cannot fail.
        (try? encode(ErrorReply(error: code.rawValue, message: message))) ?? Array(#"{"result":"ERROR"}"#.utf8)
    }

    private static let idKey = Array(#","id":"#.utf8)

    /// `{...}` + id → `{...,"id":<id>}`. The id itself goes through the encoder, never raw user bytes.
    public static func splice(id: RequestID?, into object: [UInt8]) -> [UInt8] {
        guard let id, object.last == UInt8(ascii: "}"), let encodedID = try? encode(id) else { return object }
        var out = [UInt8]()
        out.reserveCapacity(object.count + idKey.count + encodedID.count)
        out.append(contentsOf: object.dropLast())
        if object.count > 2 { out.append(contentsOf: idKey) } else { out.append(contentsOf: idKey.dropFirst()) }
        out.append(contentsOf: encodedID)
        out.append(UInt8(ascii: "}"))
        return out
    }

    public static func response(_ result: CommandResult, id: RequestID?) -> APIResponse {
        APIResponse(status: result.status, body: splice(id: id, into: result.body), afterReply: result.afterReply)
    }

    public static func errorResponse(_ code: APIErrorCode, _ message: String, id: RequestID? = nil) -> APIResponse {
        response(.error(code, message), id: id)
    }
}

/// `{"result":"OK"}`.
public struct OKReply: Encodable, Sendable {
    public let result = "OK"
    public init() {}
}
