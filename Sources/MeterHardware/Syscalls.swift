import CGPIOD
import Glibc

// One wrapper per syscall family. Each goes through `retryingInterrupts`, which retries EINTR and turns -1 into a
// thrown SystemError naming the operation; nothing above this file looks at errno directly. The C name survives
// only in the doc line. All are @inline(__always) with non-escaping closures: no allocation, no boxing.

/// Runs `call` until it doesn't fail with EINTR; -1 becomes a thrown SystemError.
@inline(__always)
func retryingInterrupts<Result: FixedWidthInteger>(
    _ operation: String, path: String?, _ call: () -> Result
) throws(SystemError) -> Result {
    while true {
        let result = call()
        if result != -1 { return result }
        let error = Glibc.errno
        if error == EINTR { continue }
        throw SystemError(operation: operation, errno: error, path: path)
    }
}

/// The corresponding C function is `open`.
@inline(__always)
func systemOpen(_ path: String, flags: Int32) throws(SystemError) -> Int32 {
    try retryingInterrupts("open", path: path) { open(path, flags) }
}

/// The corresponding C function is `close`. Never retried: on Linux the descriptor is gone even when close
/// reports EINTR, and retrying could close a descriptor another thread just opened.
@inline(__always)
func systemClose(_ fd: Int32) {
    _ = close(fd)
}

/// The corresponding C function is `read`. EAGAIN comes back as `nil` (nothing there yet).
@inline(__always)
func systemRead(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer, path: String?) throws(SystemError) -> Int? {
    guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
    while true {
        let n = read(fd, base, buffer.count)
        if n >= 0 { return n }
        let error = Glibc.errno
        if error == EINTR { continue }
        if error == EAGAIN || error == EWOULDBLOCK { return nil }
        throw SystemError(operation: "read", errno: error, path: path)
    }
}

/// The corresponding C function is `write`. EAGAIN comes back as `nil` (kernel buffer full).
@inline(__always)
func systemWrite(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, path: String?) throws(SystemError) -> Int? {
    guard let base = bytes.baseAddress, bytes.count > 0 else { return 0 }
    while true {
        let n = write(fd, base, bytes.count)
        if n >= 0 { return n }
        let error = Glibc.errno
        if error == EINTR { continue }
        if error == EAGAIN || error == EWOULDBLOCK { return nil }
        throw SystemError(operation: "write", errno: error, path: path)
    }
}

/// The corresponding C function is `ppoll` on a single descriptor. Waits at most until the monotonic `deadline`
/// (nil: forever), recomputing the remaining time after an EINTR so a signal never stretches the wait.
/// Returns the revents, or 0 when the deadline passed.
@inline(__always)
func systemPoll(_ fd: Int32, events: Int16, deadline: UInt64?, path: String?) throws(SystemError) -> Int16 {
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

/// The corresponding C function is `tcgetattr`.
@inline(__always)
func systemGetAttributes(_ fd: Int32, path: String?) throws(SystemError) -> termios {
    var settings = termios()
    _ = try retryingInterrupts("tcgetattr", path: path) { tcgetattr(fd, &settings) }
    return settings
}

/// The corresponding C function is `tcsetattr(fd, TCSANOW, …)`.
@inline(__always)
func systemSetAttributes(_ fd: Int32, _ settings: termios, path: String?) throws(SystemError) {
    var settings = settings
    _ = try retryingInterrupts("tcsetattr", path: path) { tcsetattr(fd, TCSANOW, &settings) }
}

/// The corresponding C function is `tcflush`.
@inline(__always)
func systemFlush(_ fd: Int32, queue: Int32, path: String?) throws(SystemError) {
    _ = try retryingInterrupts("tcflush", path: path) { tcflush(fd, queue) }
}

/// The corresponding C function is `tcdrain`.
@inline(__always)
func systemDrain(_ fd: Int32, path: String?) throws(SystemError) {
    _ = try retryingInterrupts("tcdrain", path: path) { tcdrain(fd) }
}

/// The corresponding C function is `ioctl` (through the CGPIOD shim, because ioctl is variadic).
@inline(__always)
func systemIoctl(_ operation: String, path: String?, _ call: () -> Int32) throws(SystemError) {
    _ = try retryingInterrupts(operation, path: path, call)
}
