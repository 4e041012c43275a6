import Platform
import Glibc
import XCTest

@testable import DeviceState

/// A fresh directory under /tmp, removed by the caller's `addTeardownBlock`.
func makeTemporaryDirectory(_ test: XCTestCase) -> String {
    var template = Array("/tmp/devicestate-test-XXXXXX".utf8CString)
    let path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
    test.addTeardownBlock { _ = try? Subprocess().run("rm", ["-rf", .plain(path)], timeout: 10) }
    return path
}

/// Tests/DeviceStateTests/Fixtures, found from this file's path (Package.swift declares
/// no test resources).
let fixturesDirectory: String = {
    let file = #filePath
    return String(file[..<file.lastIndex(of: "/")!]) + "/Fixtures"
}()

func writeText(_ text: String, to path: String) throws {
    try AtomicFile.write(Array(text.utf8), to: path)
}

func readText(_ path: String) throws -> String? {
    try AtomicFile.read(path).map { String(decoding: $0, as: UTF8.self) }
}

func fileMode(_ path: String) -> mode_t {
    var st = stat()
    stat(path, &st)
    return st.st_mode & 0o777
}

extension Result {
    /// `Result<Void, _>` is not Equatable; compare the failure instead.
    var failureValue: Failure? {
        if case .failure(let f) = self { return f }
        return nil
    }
}
