import Glibc

/// An error a command reply can carry: a short stable `code` for programs and a plain-language `message` for people.
public struct UpdateError: Error, Equatable, Sendable, CustomStringConvertible {
    public var code: String
    public var message: String

    public init(_ code: String, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code): \(message)" }

    /// The `/api` reply body for this error; the dispatcher adds `id`.
    public var reply: [String: String] { ["result": "ERROR", "error": code, "message": message] }

    static func io(_ operation: String, _ path: String, errno code: Int32) -> UpdateError {
        UpdateError("io_error", "\(operation) \(path) failed: \(String(cString: strerror(code)))")
    }

    public static func busy(_ what: String) -> UpdateError {
        UpdateError("busy", "a firmware update is already running (\(what)); wait until it has finished")
    }
}
