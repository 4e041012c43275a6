import Glibc

/// A failed system call: which operation, on what, and the errno it returned.
public struct SystemError: Error, CustomStringConvertible, Equatable {
    public let operation: String
    public let path: String
    public let errno: Int32

    public init(_ operation: String, path: String = "", errno: Int32 = Glibc.errno) {
        self.operation = operation
        self.path = path
        self.errno = errno
    }

    public var description: String {
        let reason = String(cString: strerror(errno))
        return path.isEmpty ? "\(operation): \(reason)" : "\(operation) \(path): \(reason)"
    }
}

/// Runs a system call, retrying on EINTR and turning -1 into a thrown `SystemError`.
@discardableResult
func sys<R: BinaryInteger>(_ operation: String, _ path: String = "", _ body: () -> R) throws -> R {
    while true {
        let result = body()
        if result != -1 { return result }
        let code = Glibc.errno
        if code == EINTR { continue }
        throw SystemError(operation, path: path, errno: code)
    }
}
