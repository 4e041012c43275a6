import Platform
import FoundationEssentials
import Glibc
import Synchronization
@testable import BoardSupport

/// Time that moves only when a test says so.
final class ManualClock: Sendable {
    private let current = Mutex<Duration>(.seconds(1000))
    var now: MonotonicNow { { [self] in current.withLock { $0 } } }
    func advance(_ d: Duration) { current.withLock { $0 += d } }
}

/// Collects log lines instead of writing them.
final class RecordingSink: LogSink {
    private let storage = Mutex<[String]>([])
    func write(line: String, level: LogLevel) { storage.withLock { $0.append(line) } }
    var lines: [String] { storage.withLock { $0 } }
}

/// The repository root, found from this file's path, for reading the shipped profiles and config.
let repoRoot: String = {
    var parts = #filePath.split(separator: "/", omittingEmptySubsequences: false)
    parts.removeLast(3)  // Tests/BoardSupportTests/TestSupport.swift
    return parts.joined(separator: "/")
}()

/// A fresh directory under /tmp, removed by the caller with `removeTree`.
func makeTempDirectory() -> String {
    var template = Array("/tmp/boardsupport-test-XXXXXX".utf8CString)
    let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
    precondition(made != nil, "mkdtemp failed")
    return String(cString: template)
}

func writeFile(_ path: String, _ text: String) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    precondition(fd >= 0, "open \(path)")
    var text = text
    text.withUTF8 { _ = write(fd, $0.baseAddress, $0.count) }
    close(fd)
}

func removeTree(_ path: String) {
    try? FileManager.default.removeItem(atPath: path)
}
