import Glibc

/// A failed system call (or a setting the kernel would not apply), in plain language: the one error type for
/// errno failures in every module.
///
/// `description` reads like `open /dev/ttyAMA0: Permission denied (errno 13) — is the user in the dialout group?`:
/// the operation, what it was done to, the C library's text for the errno, and `detail` where more can be said.
/// Hints for installers (dialout group, UART disabled…) are added by MeterHardware (`withInstallerHint()`), which
/// knows about serial ports; this layer does not.
///
/// Thrown with typed throws from the hot-path functions, so throwing never boxes an existential. Building one
/// costs nothing beyond retaining the strings passed in (operations are literals).
public struct SystemError: Error, CustomStringConvertible, Equatable, Sendable {
    /// What was being done: `open`, `tcsetattr`, `read`, `request GPIO line`, …
    public var operation: String
    /// The errno the call failed with (`0` when the kernel accepted a call but did not apply what was asked).
    public var errno: Int32
    /// The path, device or GPIO line the operation was applied to, if any.
    public var path: String?
    /// Why it failed or what to do about it, when more can be said than the errno text.
    public var detail: String?

    public init(operation: String, errno: Int32, path: String? = nil, detail: String? = nil) {
        self.operation = operation
        self.errno = errno
        self.path = path
        self.detail = detail
    }

    /// The failure of the call that just returned -1: reads the thread's current `errno`.
    public init(_ operation: String, path: String? = nil, errno: Int32 = Glibc.errno) {
        self.init(operation: operation, errno: errno, path: path)
    }

    /// The C library's text for `errno` ("Permission denied").
    public var errnoText: String {
        guard let text = strerror(errno) else { return "error \(errno)" }
        return String(cString: text)
    }

    public var description: String {
        var text = operation
        if let path, !path.isEmpty { text += " \(path)" }
        if errno != 0 {
            text += ": \(errnoText) (errno \(errno))"
            if let detail { text += " — \(detail)" }
        } else if let detail {
            text += ": \(detail)"
        }
        return text
    }
}

// MARK: - Retrying interrupted calls

/// Runs `call` until it doesn't fail with EINTR; -1 becomes a thrown `SystemError` naming `operation`.
///
/// The one EINTR loop: every syscall wrapper in every module goes through this or `retryingInterruptsOrAgain`.
/// Inlined with a non-escaping closure: no allocation, no boxing, fit for the Modbus hot path.
@inline(__always)
public func retryingInterrupts<Result: FixedWidthInteger>(
    _ operation: String, path: String? = nil, _ call: () -> Result
) throws(SystemError) -> Result {
    while true {
        let result = call()
        if result != -1 { return result }
        let error = Glibc.errno
        if error == EINTR { continue }
        throw SystemError(operation: operation, errno: error, path: path)
    }
}

/// As `retryingInterrupts`, for non-blocking descriptors: EAGAIN/EWOULDBLOCK come back as `nil` ("not now").
@inline(__always)
public func retryingInterruptsOrAgain<Result: FixedWidthInteger>(
    _ operation: String, path: String? = nil, _ call: () -> Result
) throws(SystemError) -> Result? {
    while true {
        let result = call()
        if result != -1 { return result }
        let error = Glibc.errno
        if error == EINTR { continue }
        if error == EAGAIN || error == EWOULDBLOCK { return nil }
        throw SystemError(operation: operation, errno: error, path: path)
    }
}

/// For the pthread-style calls that return the error number itself (0 on success) instead of -1 and errno.
@inline(__always)
public func checkingErrorNumber(_ operation: String, path: String? = nil, _ call: () -> Int32) throws(SystemError) {
    while true {
        let result = call()
        if result == 0 { return }
        if result == EINTR { continue }
        throw SystemError(operation: operation, errno: result, path: path)
    }
}
