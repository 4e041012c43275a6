import CPlatform
import Glibc

/// Descriptor I/O, each call wrapped once: EINTR retried, -1 thrown as `SystemError`, waits bounded by a deadline
/// on `MonotonicClock`. Inlined with non-escaping closures: no allocation on the Modbus hot path.
public enum Descriptor {
    /// The corresponding C function is `open` (always with O_CLOEXEC: no descriptor leaks into a child or a re-exec).
    @inline(__always)
    public static func open(_ path: String, flags: Int32, mode: mode_t = 0o644) throws(SystemError) -> Int32 {
        try retryingInterrupts("open", path: path) { Glibc.open(path, flags | O_CLOEXEC, mode) }
    }

    /// The corresponding C function is `close`. Never retried: on Linux the descriptor is gone even when close
    /// reports EINTR, and retrying could close a descriptor another thread just opened.
    @inline(__always)
    public static func close(_ fd: Int32) {
        _ = Glibc.close(fd)
    }

    /// The corresponding C function is `read`. EAGAIN comes back as `nil` (nothing there yet); 0 is end of file.
    @inline(__always)
    public static func read(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, path: String? = nil)
        throws(SystemError) -> Int?
    {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
        return try retryingInterruptsOrAgain("read", path: path) { Glibc.read(fd, base, buffer.count) }
    }

    /// The corresponding C function is `write`. EAGAIN comes back as `nil` (kernel buffer full).
    @inline(__always)
    public static func write(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, path: String? = nil)
        throws(SystemError) -> Int?
    {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return 0 }
        return try retryingInterruptsOrAgain("write", path: path) { Glibc.write(fd, base, bytes.count) }
    }

    /// The corresponding C function is `ppoll` on a single descriptor. Waits at most until the monotonic `deadline`
    /// (nil: forever), recomputing the remaining time after an EINTR so a signal never stretches the wait.
    /// Returns the revents, or 0 when the deadline passed.
    @inline(__always)
    public static func poll(_ fd: Int32, events: Int16, deadline: UInt64?, path: String? = nil)
        throws(SystemError) -> Int16
    {
        while true {
            var timeout: Int64 = -1
            if let deadline {
                let now = MonotonicClock.nowNanos()
                timeout = deadline > now ? Int64(deadline - now) : 0
            }
            let result = meterext_poll_one(fd, events, timeout)
            if result >= 0 { return Int16(truncatingIfNeeded: result) }
            let error = Glibc.errno
            if error == EINTR { continue }
            throw SystemError(operation: "poll", errno: error, path: path)
        }
    }

    /// Reads until `buffer` is full, end of file, or the monotonic `deadline` (nil: no limit) passes; works on
    /// blocking and non-blocking descriptors alike. Returns the number of bytes read.
    public static func read(_ fd: Int32, filling buffer: UnsafeMutableRawBufferPointer, deadline: UInt64?,
                            path: String? = nil) throws(SystemError) -> Int {
        var got = 0
        while got < buffer.count {
            if deadline != nil {
                let ready = try poll(fd, events: Int16(POLLIN), deadline: deadline, path: path)
                if ready == 0 { break }
            }
            guard let n = try read(fd, into: UnsafeMutableRawBufferPointer(rebasing: buffer[got...]), path: path)
            else {
                // EAGAIN on a non-blocking descriptor: wait for data (or the deadline) instead of spinning.
                if try poll(fd, events: Int16(POLLIN), deadline: deadline, path: path) == 0 { break }
                continue
            }
            if n == 0 { break }
            got += n
        }
        return got
    }

    /// Writes all of `bytes` unless the monotonic `deadline` (nil: no limit) passes first; a short write or EINTR
    /// never drops the tail. Returns the number of bytes written (all of them unless the deadline passed).
    @discardableResult
    public static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, deadline: UInt64? = nil,
                                path: String? = nil) throws(SystemError) -> Int {
        var offset = 0
        while offset < bytes.count {
            if let n = try write(fd, UnsafeRawBufferPointer(rebasing: bytes[offset...]), path: path) {
                offset += n
                continue
            }
            // EAGAIN: wait until the descriptor takes more, or give up at the deadline.
            if try poll(fd, events: Int16(POLLOUT), deadline: deadline, path: path) == 0 { break }
        }
        return offset
    }

    /// As `writeAll(_:_:deadline:path:)` for an array.
    @discardableResult
    public static func writeAll(_ fd: Int32, _ bytes: [UInt8], deadline: UInt64? = nil,
                                path: String? = nil) throws(SystemError) -> Int {
        var result: Result<Int, SystemError> = .success(0)
        bytes.withUnsafeBytes { buffer in
            result = Result { () throws(SystemError) in try writeAll(fd, buffer, deadline: deadline, path: path) }
        }
        return try result.get()
    }

    /// fcntl(F_SETFL): adds `flags` (O_NONBLOCK) to the file status flags.
    public static func addStatusFlags(_ fd: Int32, _ flags: Int32, path: String? = nil) throws(SystemError) {
        _ = try retryingInterrupts("fcntl(F_SETFL)", path: path) { meterext_fd_add_status_flags(fd, flags) }
    }

    /// fcntl(F_SETFD, FD_CLOEXEC).
    public static func setCloseOnExec(_ fd: Int32, path: String? = nil) throws(SystemError) {
        _ = try retryingInterrupts("fcntl(F_SETFD)", path: path) { meterext_fd_set_cloexec(fd) }
    }

    /// A pipe whose ends are close-on-exec (pipe2 with O_CLOEXEC, so no concurrent spawn can inherit them).
    /// `nonBlocking` sets O_NONBLOCK on both ends.
    public static func pipe(nonBlocking: Bool = false) throws(SystemError) -> (read: Int32, write: Int32) {
        var fds: (Int32, Int32) = (-1, -1)
        let flags = O_CLOEXEC | (nonBlocking ? O_NONBLOCK : 0)
        _ = try withUnsafeMutableBytes(of: &fds) { (raw) throws(SystemError) -> Int32 in
            let p = raw.baseAddress!.assumingMemoryBound(to: Int32.self)
            return try retryingInterrupts("pipe2") { meterext_pipe2(p, flags) }
        }
        return (fds.0, fds.1)
    }
}
