import Platform
import Glibc

/// The sd_notify protocol, spoken directly: one datagram of `KEY=VALUE` lines to the AF_UNIX socket named in
/// `$NOTIFY_SOCKET` (a leading `@` means Linux's abstract namespace). No libsystemd, so the binary has no dependency
/// the board image must carry. Outside systemd (no `$NOTIFY_SOCKET`) every call is a no-op.
public struct SystemdNotifier: Sendable {
    /// The socket path as given by systemd, or nil when not started by systemd with `Type=notify`.
    public let socketPath: String?
    /// How often systemd expects `WATCHDOG=1` at the latest (`$WATCHDOG_USEC`), or nil when the watchdog is off or
    /// meant for another process (`$WATCHDOG_PID` names a different pid).
    public let watchdogTimeout: Duration?

    public init(socketPath: String?, watchdogTimeout: Duration?) {
        self.socketPath = socketPath.flatMap { $0.isEmpty ? nil : $0 }
        self.watchdogTimeout = watchdogTimeout
    }

    /// Reads `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID`.
    public init(
        environment: (String) -> String? = { getenv($0).map { String(cString: $0) } },
        pid: pid_t = getpid()
    ) {
        var timeout: Duration?
        if let usec = environment("WATCHDOG_USEC").flatMap(UInt64.init), usec > 0 {
            let forUs = environment("WATCHDOG_PID").map { pid_t($0) == pid } ?? true
            if forUs { timeout = .microseconds(Int64(clamping: usec)) }
        }
        self.init(socketPath: environment("NOTIFY_SOCKET"), watchdogTimeout: timeout)
    }

    public var isActive: Bool { socketPath != nil }

    /// How often to ping: half the timeout, as sd_watchdog_enabled(3) recommends, so one late tick is not fatal.
    public var watchdogPingInterval: Duration? { watchdogTimeout.map { $0 / 2 } }

    /// Start-up finished: the poll loop runs and the HTTP server listens.
    public func ready(status: String? = nil) throws(NotifyError) {
        try send(["READY=1"] + (status.map { ["STATUS=\($0)"] } ?? []))
    }

    /// Keep-alive for `WatchdogSec=`. Send only when the whole service is healthy — see `WatchdogGate`.
    public func watchdog() throws(NotifyError) { try send(["WATCHDOG=1"]) }

    /// Free-form one-line status shown by `systemctl status meterext`.
    public func status(_ text: String) throws(NotifyError) { try send(["STATUS=\(text)"]) }

    public func stopping() throws(NotifyError) { try send(["STOPPING=1"]) }

    /// Sends the assignments as one datagram. Newlines inside a value would start a new assignment, so they are
    /// replaced with spaces.
    public func send(_ assignments: [String]) throws(NotifyError) {
        guard let socketPath else { return }
        let message = assignments.map { String($0.map { $0.isNewline ? " " : $0 }) }.joined(separator: "\n")
        try Self.sendDatagram(message, to: socketPath)
    }

    private static func sendDatagram(_ message: String, to path: String) throws(NotifyError) {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var pathBytes = Array(path.utf8)
        let abstract = pathBytes.first == UInt8(ascii: "@")
        if abstract { pathBytes[0] = 0 }
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        // A filesystem path needs room for its terminating NUL; an abstract name is length-delimited instead.
        guard pathBytes.count + (abstract ? 0 : 1) <= capacity, pathBytes.count > (abstract ? 1 : 0) else {
            throw NotifyError(operation: "NOTIFY_SOCKET '\(path)'", errno: ENAMETOOLONG)
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: pathBytes)
        }
        let length = socklen_t(MemoryLayout<sockaddr_un>.offset(of: \.sun_path)! + pathBytes.count + (abstract ? 0 : 1))

        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw NotifyError(operation: "socket", errno: errno) }
        defer { close(fd) }
        var text = message
        let sent = text.withUTF8 { buffer in
            withUnsafePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                    Result { () throws(SystemError) in
                        try retryingInterrupts("sendto") {
                            sendto(fd, buffer.baseAddress, buffer.count, Int32(MSG_NOSIGNAL), sa, length)
                        }
                    }
                }
            }
        }
        if case .failure(let error) = sent { throw NotifyError(operation: "sendto \(path)", errno: error.errno) }
    }
}

public struct NotifyError: Error, CustomStringConvertible, Equatable {
    public let operation: String
    public let errno: Int32
    public var description: String { "sd_notify: \(operation): \(String(cString: strerror(errno)))" }
}
