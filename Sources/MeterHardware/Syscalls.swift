import CPlatform
import Glibc
import Platform

// The serial-port syscalls, each wrapped once on top of Platform's retry helpers, adding the installer hint to
// whatever they throw; nothing above this file looks at errno directly. The C name survives only in the doc line.
// All are @inline(__always) with non-escaping closures: no allocation, no boxing.

/// Runs `call` through Platform's EINTR retry; the error gets its installer hint.
@inline(__always)
func hinted<Result>(_ call: () throws(SystemError) -> Result) throws(SystemError) -> Result {
    do { return try call() } catch { throw error.withInstallerHint() }
}

/// The corresponding C function is `open` (with O_CLOEXEC).
@inline(__always)
func systemOpen(_ path: String, flags: Int32) throws(SystemError) -> Int32 {
    try hinted { () throws(SystemError) in try Descriptor.open(path, flags: flags) }
}

/// The corresponding C function is `close`; see `Descriptor.close` for why it is never retried.
@inline(__always)
func systemClose(_ fd: Int32) {
    Descriptor.close(fd)
}

/// The corresponding C function is `read`. EAGAIN comes back as `nil` (nothing there yet).
@inline(__always)
func systemRead(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer, path: String?) throws(SystemError) -> Int? {
    try hinted { () throws(SystemError) in try Descriptor.read(fd, into: buffer, path: path) }
}

/// The corresponding C function is `write`. EAGAIN comes back as `nil` (kernel buffer full).
@inline(__always)
func systemWrite(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, path: String?) throws(SystemError) -> Int? {
    try hinted { () throws(SystemError) in try Descriptor.write(fd, bytes, path: path) }
}

/// The corresponding C function is `ppoll` on a single descriptor, until the monotonic `deadline` (nil: forever).
/// Returns the revents, or 0 when the deadline passed.
@inline(__always)
func systemPoll(_ fd: Int32, events: Int16, deadline: UInt64?, path: String?) throws(SystemError) -> Int16 {
    try hinted { () throws(SystemError) in try Descriptor.poll(fd, events: events, deadline: deadline, path: path) }
}

/// The corresponding C function is `tcgetattr`.
@inline(__always)
func systemGetAttributes(_ fd: Int32, path: String?) throws(SystemError) -> termios {
    var settings = termios()
    _ = try hinted { () throws(SystemError) in try retryingInterrupts("tcgetattr", path: path) { tcgetattr(fd, &settings) } }
    return settings
}

/// The corresponding C function is `tcsetattr(fd, TCSANOW, …)`.
@inline(__always)
func systemSetAttributes(_ fd: Int32, _ settings: termios, path: String?) throws(SystemError) {
    var settings = settings
    _ = try hinted { () throws(SystemError) in
        try retryingInterrupts("tcsetattr", path: path) { tcsetattr(fd, TCSANOW, &settings) }
    }
}

/// The corresponding C function is `tcflush`.
@inline(__always)
func systemFlush(_ fd: Int32, queue: Int32, path: String?) throws(SystemError) {
    _ = try hinted { () throws(SystemError) in try retryingInterrupts("tcflush", path: path) { tcflush(fd, queue) } }
}

/// The corresponding C function is `tcdrain`.
@inline(__always)
func systemDrain(_ fd: Int32, path: String?) throws(SystemError) {
    _ = try hinted { () throws(SystemError) in try retryingInterrupts("tcdrain", path: path) { tcdrain(fd) } }
}

/// The corresponding C function is `ioctl` (through the CPlatform shim, because ioctl is variadic).
@inline(__always)
func systemIoctl(_ operation: String, path: String?, _ call: () -> Int32) throws(SystemError) {
    _ = try hinted { () throws(SystemError) in try retryingInterrupts(operation, path: path, call) }
}
