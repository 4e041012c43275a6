import Platform
import CPlatform
import Glibc

/// A pseudo-terminal pair standing in for an RS485 bus: something (the in-process meter simulator, a test) talks on
/// the master descriptor, and a real `SerialPort` opens `slavePath` exactly as it would open /dev/ttyAMA0.
///
/// Both ends are raw. The pair keeps its own descriptor on the slave open for its whole life, so the master never
/// sees a hangup (EIO / POLLHUP) while the `SerialPort` on the slave is closed and reopened.
///
/// A pty has no wire: no parity, no RTS, no TEMT and no transmit time; use 8N1 and `--direction none` on it.
public final class PTYPair {
    /// The master end, non-blocking and close-on-exec; -1 once closed.
    public private(set) var masterFD: Int32
    /// `/dev/pts/N`: open this with `SerialPort`.
    public let slavePath: String
    private var slaveKeepAliveFD: Int32

    /// The corresponding C functions are `posix_openpt`, `grantpt`, `unlockpt` and `ptsname_r`.
    public init() throws(SystemError) {
        var name = [CChar](repeating: 0, count: 128)
        var failedCall: UnsafePointer<CChar>? = nil
        let master = name.withUnsafeMutableBufferPointer { buffer in
            meterext_pty_open(buffer.baseAddress, buffer.count, &failedCall)
        }
        if master < 0 {
            let operation = failedCall.map { String(cString: $0) } ?? "posix_openpt"
            throw SystemError(
                operation: operation, errno: Glibc.errno, path: "/dev/ptmx",
                detail: "cannot create a pseudo-terminal (is /dev/pts mounted?)")
        }
        let slave = name.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        var keepAlive: Int32 = -1
        do {
            _ = try retryingInterrupts("set non-blocking", path: "/dev/ptmx") {
                meterext_fd_add_status_flags(master, O_NONBLOCK)
            }
            _ = try retryingInterrupts("set close-on-exec", path: "/dev/ptmx") { meterext_fd_set_cloexec(master) }
            keepAlive = try systemOpen(slave, flags: O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC)
            // termios on a pty lives with the slave (the master's termios ioctls reach the slave's too), so one
            // raw 8N1 setting covers both directions.
            var t = try systemGetAttributes(keepAlive, path: slave)
            t = SerialPort.rawSettings(from: t, line: .init(baud: 9600, parity: .none), speed: speed_t(B9600))
            try systemSetAttributes(keepAlive, t, path: slave)
        } catch {
            if keepAlive >= 0 { systemClose(keepAlive) }
            systemClose(master)
            throw error
        }
        masterFD = master
        slavePath = slave
        slaveKeepAliveFD = keepAlive
    }

    deinit {
        close()
    }

    /// Closes both descriptors; a `SerialPort` on the slave then sees EIO.
    public func close() {
        if slaveKeepAliveFD >= 0 {
            systemClose(slaveKeepAliveFD)
            slaveKeepAliveFD = -1
        }
        if masterFD >= 0 {
            systemClose(masterFD)
            masterFD = -1
        }
    }

    /// Writes all of `bytes` into the master end (they arrive at the slave).
    @discardableResult
    public func writeMaster(_ bytes: UnsafeRawBufferPointer) throws(SystemError) -> Int {
        var written = 0
        while written < bytes.count {
            let rest = UnsafeRawBufferPointer(rebasing: bytes[written...])
            if let n = try systemWrite(masterFD, rest, path: "pty master") {
                written += n
                continue
            }
            let deadline = MonotonicClock.nowNanos() &+ 1_000_000_000
            if try systemPoll(masterFD, events: Int16(POLLOUT), deadline: deadline, path: "pty master") == 0 {
                throw SystemError(
                    operation: "write", errno: ETIMEDOUT, path: "pty master",
                    detail: "nothing is reading \(slavePath)")
            }
        }
        return written
    }

    /// Reads what the slave side wrote, waiting at most `timeoutNanos` for the first byte; 0 on timeout.
    public func readMaster(into buffer: UnsafeMutableRawBufferPointer, timeoutNanos: UInt64) throws(SystemError) -> Int {
        let deadline = MonotonicClock.nowNanos() &+ timeoutNanos
        while true {
            if let n = try systemRead(masterFD, buffer, path: "pty master"), n > 0 { return n }
            if MonotonicClock.nowNanos() >= deadline { return 0 }
            let ready = try systemPoll(masterFD, events: Int16(POLLIN), deadline: deadline, path: "pty master")
            if ready == 0 { return 0 }
            if ready & Int16(POLLNVAL) != 0 {
                throw SystemError(operation: "read", errno: EBADF, path: "pty master")
            }
        }
    }
}
