import Dispatch
import FoundationEssentials

/// One parsed `/api` request as a handler sees it.
public struct CommandRequest: Sendable {
    public let cmd: String
    public let id: RequestID?
    /// The whole request body; handlers decode their own parameters from it with `parameters(_:)`.
    public let body: [UInt8]

    public init(cmd: String, id: RequestID?, body: [UInt8]) {
        self.cmd = cmd
        self.id = id
        self.body = body
    }

    /// Decodes the command's parameters from the body. The error is phrased for the client.
    public func parameters<T: Decodable>(_ type: T.Type) -> Result<T, ParameterError> {
        do {
            return .success(try JSONDecoder().decode(T.self, from: Data(body)))
        } catch let error as DecodingError {
            return .failure(ParameterError(message: Self.describe(error)))
        } catch let error as ParameterError {
            return .failure(error)
        } catch {
            return .failure(ParameterError(message: "the parameters could not be read"))
        }
    }

    static func describe(_ error: DecodingError) -> String {
        func field(_ path: [CodingKey]) -> String { path.map(\.stringValue).joined(separator: ".") }
        switch error {
        case .keyNotFound(let key, let ctx):
            return "field '\(field(ctx.codingPath + [key]))' is missing"
        case .typeMismatch(let type, let ctx):
            return "field '\(field(ctx.codingPath))' has the wrong type (expected \(Self.typeName(type)))"
        case .valueNotFound(let type, let ctx):
            return "field '\(field(ctx.codingPath))' is null (expected \(Self.typeName(type)))"
        case .dataCorrupted(let ctx):
            return ctx.codingPath.isEmpty ? "the body is not valid JSON" : "field '\(field(ctx.codingPath))' is invalid"
        @unknown default:
            return "the parameters could not be read"
        }
    }

    static func typeName(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: return "a string"
        case is RequestID.Type: return "a string or a number"
        case is Bool.Type: return "true or false"
        default: return "\(type)"
        }
    }
}

public struct ParameterError: Error, Sendable {
    public var message: String
    public init(message: String) { self.message = message }
}

/// A command implementation. Most commands answer at once (`sync`, called on the HTTP event loop: must not
/// block); commands that talk to the meter (`relay_set`) are `async`; commands that may block (fsync, WiFi,
/// subprocesses) are registered with `CommandRegistry.register(_:blocking:)`, which runs them on a queue.
public enum CommandHandler: Sendable {
    case sync(@Sendable (CommandRequest) -> CommandResult)
    case async(@Sendable (CommandRequest) async -> CommandResult)
}

/// `cmd` → handler. Build one, register handlers (later registrations replace earlier ones, so other
/// engineers can replace the `not_available` stubs), then hand it to `CommandDispatcher`.
public struct CommandRegistry: Sendable {
    public private(set) var handlers: [String: CommandHandler] = [:]

    public init() {}

    public mutating func register(_ cmd: String, _ handler: CommandHandler) {
        handlers[cmd] = handler
    }

    public mutating func register(_ cmd: String, sync handler: @escaping @Sendable (CommandRequest) -> CommandResult) {
        handlers[cmd] = .sync(handler)
    }

    public mutating func register(
        _ cmd: String, async handler: @escaping @Sendable (CommandRequest) async -> CommandResult
    ) {
        handlers[cmd] = .async(handler)
    }

    /// A command that may block (fsync, subprocesses, WiFi): it runs on `queue`, never on the HTTP event loop nor
    /// on a Swift concurrency thread, and the reply is written back when it returns.
    public mutating func register(
        _ cmd: String, queue: DispatchQueue = CommandRegistry.blockingQueue,
        blocking handler: @escaping @Sendable (CommandRequest) -> CommandResult
    ) {
        handlers[cmd] = .async { request in
            await withCheckedContinuation { continuation in
                queue.async { continuation.resume(returning: handler(request)) }
            }
        }
    }

    /// Where `register(_:blocking:)` runs commands by default: one at a time, in arrival order.
    public static let blockingQueue = DispatchQueue(label: "meterext.api.blocking")

    public var commands: [String] { handlers.keys.sorted() }
}

/// What dispatching a request gives: a reply now, or work to await (the HTTP layer runs it off the event loop).
public enum DispatchOutcome: Sendable {
    case reply(APIResponse)
    case pending(@Sendable () async -> APIResponse)
}

/// Who sent a request, as the HTTP layer decided it. Plain values: the dispatcher knows nothing about sockets.
public struct RequestContext: Sendable, Equatable {
    /// The board itself (loopback, Unix socket).
    public var peerIsTrusted: Bool
    /// The request arrived on the set-up access point's own address while it is open (a phone on the access point).
    /// Such a client may run the set-up commands (`CommandAuthorizer.setupCommands`) without the token, nothing more.
    public var arrivedOnSetupAccessPoint: Bool
    /// The token from `Authorization: Bearer <token>`; nil when none was sent.
    public var bearerToken: String?
    /// Set by the HTTP layer when a browser sent the request from a page that is not the board's own (`Origin`)
    /// or under a name that is not the board's (`Host`: DNS rebinding). Commands that change the board are then
    /// refused with it, token or not; reading commands are not affected.
    public var browserRefusal: Refusal?

    /// An error code and message for the client.
    public struct Refusal: Sendable, Equatable {
        public var code: APIErrorCode
        public var message: String
        public init(code: APIErrorCode, message: String) {
            self.code = code
            self.message = message
        }
    }

    public init(peerIsTrusted: Bool, arrivedOnSetupAccessPoint: Bool = false, bearerToken: String?,
                browserRefusal: Refusal? = nil) {
        self.peerIsTrusted = peerIsTrusted
        self.arrivedOnSetupAccessPoint = arrivedOnSetupAccessPoint
        self.bearerToken = bearerToken
        self.browserRefusal = browserRefusal
    }

    /// In-process callers (CLI, tests): the board itself.
    public static let local = RequestContext(peerIsTrusted: true, bearerToken: nil)
}

/// Which requests may change the board. Commands in `protectedCommands` run without credentials only for the board
/// itself; a phone on the open set-up access point may also run the set-up commands among them (`setupCommands`:
/// joining a network, the meter key, the access point itself); anyone else needs the API token, unless the installer
/// turned the requirement off. `relay_set`, firmware, downloads, outgoing requests, factory reset and restart need the
/// token from every address but the board itself. Every other command (readings, status, unknown commands) stays open, as on a
/// MeterExtension #1, so existing apps keep working.
public struct CommandAuthorizer: Sendable {
    /// The commands that change the board. The HTTP layer protects `POST /ota` with the same rule.
    public static let protectedCommands: Set<String> = [
        "firmware_update", "download_file", "request_post", "meter_factreset", "system_restart", "meter_setkey",
        "wifi_config", "wifi_ap", "relay_set", "wifi_ap_password",
    ]

    /// Protected commands a client on the open set-up access point may run without the token: what setting the
    /// board up needs. (`wifi_scan`, `wifi_status`, `get_ip_info`, `system_status`, `meter_reading`, `meter_status`
    /// and the pages are open to everyone anyway.)
    public static let setupCommands: Set<String> = ["wifi_config", "meter_setkey", "wifi_ap"]

    public var protectedCommands: Set<String>
    public var tokenRequired: Bool
    /// Compares a presented token with the board's (constant time: the state store's check).
    public var tokenIsValid: @Sendable (String) -> Bool

    public init(tokenRequired: Bool = true, protectedCommands: Set<String> = CommandAuthorizer.protectedCommands,
                tokenIsValid: @escaping @Sendable (String) -> Bool) {
        self.tokenRequired = tokenRequired
        self.protectedCommands = protectedCommands
        self.tokenIsValid = tokenIsValid
    }

    /// Whether `cmd` may run for this request.
    public func permits(_ cmd: String, _ context: RequestContext) -> Bool {
        if !protectedCommands.contains(cmd) { return true }
        if context.arrivedOnSetupAccessPoint && Self.setupCommands.contains(cmd) { return true }
        return permitsChange(context)
    }

    /// Whether this request may change the board beyond setting it up (a protected command, a firmware upload).
    /// Being on the set-up access point does not count: its password is printed on a label or public.
    public func permitsChange(_ context: RequestContext) -> Bool {
        if !tokenRequired || context.peerIsTrusted { return true }
        guard let token = context.bearerToken, !token.isEmpty else { return false }
        return tokenIsValid(token)
    }

    /// What a refused client is told (JSON `message`, and the `/ota` plain-text reply).
    public static let refusalMessage = "this request changes the board: send the API token as the header "
        + "'Authorization: Bearer <token>' (see the README, API token)"
}

/// The pure `/api` dispatcher: bytes in, reply out. No networking; the HTTP layer is a thin adapter over it.
public final class CommandDispatcher: Sendable {
    public let registry: CommandRegistry
    private let healthHandler: @Sendable () -> CommandResult

    /// - Parameter health: the `/healthz` body; defaults to `{"result":"OK"}`.
    public init(registry: CommandRegistry, health: (@Sendable () -> CommandResult)? = nil) {
        self.registry = registry
        self.healthHandler = health ?? { .ok(OKReply()) }
    }

    /// Parses the envelope (`cmd`, optional `id`) whatever the Content-Type was, and runs the handler.
    /// Without an `authorizer` every command runs (in-process callers).
    public func dispatch(body: [UInt8], context: RequestContext = .local,
                         authorizer: CommandAuthorizer? = nil) -> DispatchOutcome {
        let envelope: Envelope
        switch Envelope.parse(body) {
        case .success(let e): envelope = e
        case .failure(let error): return .reply(ReplyEncoder.errorResponse(error.code, error.message, id: error.id))
        }
        // Before the handler lookup, so a refused client learns nothing about what this firmware offers.
        if let authorizer, let refusal = context.browserRefusal, authorizer.protectedCommands.contains(envelope.cmd) {
            return .reply(ReplyEncoder.errorResponse(refusal.code, refusal.message, id: envelope.id))
        }
        if let authorizer, !authorizer.permits(envelope.cmd, context) {
            return .reply(ReplyEncoder.errorResponse(.unauthorized, CommandAuthorizer.refusalMessage, id: envelope.id))
        }
        let request = CommandRequest(cmd: envelope.cmd, id: envelope.id, body: body)
        guard let handler = registry.handlers[envelope.cmd] else {
            return .reply(ReplyEncoder.errorResponse(
                .unknownCommand, "unknown command '\(envelope.cmd)'", id: envelope.id))
        }
        switch handler {
        case .sync(let run):
            return .reply(ReplyEncoder.response(run(request), id: envelope.id))
        case .async(let run):
            return .pending { ReplyEncoder.response(await run(request), id: envelope.id) }
        }
    }

    /// Convenience for callers that can await (tests, CLI).
    public func handle(body: [UInt8], context: RequestContext = .local,
                       authorizer: CommandAuthorizer? = nil) async -> APIResponse {
        switch dispatch(body: body, context: context, authorizer: authorizer) {
        case .reply(let r): return r
        case .pending(let work): return await work()
        }
    }

    public func health() -> APIResponse {
        ReplyEncoder.response(healthHandler(), id: nil)
    }
}

/// `{"cmd": <string>, "id": <string|number>?}`; every other field belongs to the command.
struct Envelope {
    var cmd: String
    var id: RequestID?

    struct Failure: Error {
        var code: APIErrorCode
        var message: String
        var id: RequestID?
    }

    private struct Probe: Decodable {
        var envelope: Envelope

        enum Keys: String, CodingKey { case cmd, id }

        init(from decoder: Decoder) throws {
            let container: KeyedDecodingContainer<Keys>
            do {
                container = try decoder.container(keyedBy: Keys.self)
            } catch {
                throw Failure(code: .invalidJSON, message: "the body must be a JSON object", id: nil)
            }
            var id: RequestID? = nil
            if container.contains(.id) {
                if (try? container.decodeNil(forKey: .id)) == true {
                    throw Failure(code: .wrongType, message: "field 'id' must be a string or a number, not null", id: nil)
                }
                do {
                    id = try container.decode(RequestID.self, forKey: .id)
                } catch {
                    throw Failure(code: .wrongType, message: "field 'id' must be a string or a number", id: nil)
                }
            }
            guard container.contains(.cmd) else {
                throw Failure(code: .missingCommand, message: "field 'cmd' is missing", id: id)
            }
            guard let cmd = try? container.decode(String.self, forKey: .cmd) else {
                throw Failure(code: .wrongType, message: "field 'cmd' must be a string", id: id)
            }
            envelope = Envelope(cmd: cmd, id: id)
        }
    }

    static func parse(_ body: [UInt8]) -> Result<Envelope, Failure> {
        if body.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0A || $0 == 0x0D }) {
            return .failure(Failure(code: .invalidJSON, message: "the body is empty; send a JSON object with 'cmd'"))
        }
        do {
            return .success(try JSONDecoder().decode(Probe.self, from: Data(body)).envelope)
        } catch let failure as Failure {
            return .failure(failure)
        } catch {
            return .failure(Failure(code: .invalidJSON, message: "the body is not valid JSON" + quoteHint(body)))
        }
    }

    /// Text pasted from a word processor or a README rendered with "smart quotes" carries “ ” (or ‘ ’) where JSON
    /// needs straight quotes: say so, since the bytes look right to a person.
    static func quoteHint(_ body: [UInt8]) -> String {
        var found: [String] = []
        for (third, name) in [(UInt8(0x9C), "“"), (0x9D, "”"), (0x98, "‘"), (0x99, "’")] {
            if body.indices.dropLast(2).contains(where: { body[$0] == 0xE2 && body[$0 + 1] == 0x80 && body[$0 + 2] == third }) {
                found.append(name)
            }
        }
        guard !found.isEmpty else { return "" }
        return ": it contains typographic quotes (\(found.joined(separator: " "))); use straight double quotes (\") around names and strings"
    }
}
