import Glibc

/// A failed system call (or a hardware setting the kernel would not apply), in plain language.
///
/// `description` reads like `open /dev/ttyAMA0: Permission denied (errno 13) — is the user in the dialout group?`:
/// the operation, what it was done to, the C library's text for the errno, and a hint where one helps.
///
/// Thrown with typed throws from the hot-path functions, so throwing never boxes an existential. Building one
/// costs nothing beyond retaining the strings passed in (operations and hints are literals).
public struct SystemError: Error, CustomStringConvertible, Equatable, Sendable {
    /// What was being done: `open`, `tcsetattr`, `read`, `request GPIO line`, …
    public var operation: String
    /// The errno the call failed with (`0` when the kernel accepted a call but did not apply what was asked).
    public var errno: Int32
    /// The device path or GPIO line the operation was applied to, if any.
    public var path: String?
    /// Why it failed or what to do about it, when more can be said than the errno text.
    public var detail: String?

    public init(operation: String, errno: Int32, path: String? = nil, detail: String? = nil) {
        self.operation = operation
        self.errno = errno
        self.path = path
        self.detail = detail ?? SystemError.hint(operation: operation, errno: errno)
    }

    /// The C library's text for `errno` ("Permission denied").
    public var errnoText: String {
        guard let text = strerror(errno) else { return "error \(errno)" }
        return String(cString: text)
    }

    public var description: String {
        var text = operation
        if let path { text += " \(path)" }
        if errno != 0 {
            text += ": \(errnoText) (errno \(errno))"
            if let detail { text += " — \(detail)" }
        } else if let detail {
            text += ": \(detail)"
        }
        return text
    }

    /// Hints for the failures people actually hit when bringing a board up.
    static func hint(operation: String, errno: Int32) -> String? {
        switch (operation, errno) {
        case ("open", EACCES), ("open", EPERM):
            return "is the user in the dialout group?"
        case ("open", ENOENT):
            return "no such device; check the port path (ls /dev/ttyAMA* /dev/ttyS* /dev/ttyUSB* /dev/serial/by-id)"
        case ("open", EBUSY):
            return "another process has the port open exclusively (a serial console or getty on it?)"
        case ("open", ENXIO), ("open", ENODEV):
            return "the device node exists but no driver is behind it (UART disabled in config.txt, or adapter unplugged?)"
        case ("tcgetattr", ENOTTY), ("tcgetattr", EINVAL):
            return "not a serial port (a tty device such as /dev/ttyAMA0 or /dev/ttyUSB0 is needed)"
        case (_, EIO):
            return "the device went away (USB adapter unplugged, or the other end of the pty closed?)"
        default:
            return nil
        }
    }
}
