import FoundationEssentials
import Glibc
import Platform

/// `<state-dir>/service.lock`: the running service holds an exclusive `flock` on it for its whole life and writes
/// where its API answers on this board. The CLI reads it to tell whether the service runs — then a settings change
/// goes to the service (one writer for the files) — and where to reach it. The kernel drops the lock when the
/// process dies; the descriptor is close-on-exec, so a restart (exec) releases it for the new process too.
public final class ServiceLock: @unchecked Sendable {
    public static let fileName = "service.lock"

    /// What the service writes into the lock file.
    public struct Info: Codable, Equatable, Sendable {
        public var pid: Int32
        /// An address this board reaches the API on (loopback when the service listens on all addresses).
        public var host: String?
        public var port: Int?

        public init(pid: Int32, host: String? = nil, port: Int? = nil) {
            self.pid = pid
            self.host = host
            self.port = port
        }

        /// "host:port" for the CLI's API client, nil while the service has not bound its port yet.
        public var endpoint: String? {
            guard let host, let port else { return nil }
            return "\(host):\(port)"
        }
    }

    public struct Held: Error, CustomStringConvertible {
        public var path: String
        public var owner: Info?
        public var description: String {
            "another meterext service (pid \(owner.map { String($0.pid) } ?? "?")) is running on this state directory "
                + "(\(path) is locked)"
        }
    }

    public let path: String
    private let fd: Int32

    private init(path: String, fd: Int32) {
        self.path = path
        self.fd = fd
    }

    deinit { close(fd) }

    /// Takes the lock (retrying for up to 5 s: a CLI probing it holds it for microseconds, and a stopped predecessor
    /// may still be exiting). Throws `Held` when
    /// another service holds it.
    public static func acquire(directory: String) throws -> ServiceLock {
        let path = "\(directory)/\(fileName)"
        var fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        if fd == -1 && errno == EACCES {
            // Left by a service that ran as another user (root); the directory is ours.
            unlink(path)
            fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        }
        if fd == -1 { throw SystemError("open", path: path) }
        for attempt in 0..<100 {
            if flock(fd, LOCK_EX | LOCK_NB) == 0 {
                let lock = ServiceLock(path: path, fd: fd)
                try lock.publish(Info(pid: getpid()))
                return lock
            }
            guard errno == EWOULDBLOCK || errno == EINTR else {
                let error = SystemError("flock", path: path)
                close(fd)
                throw error
            }
            if attempt < 99 { usleep(50_000) }
        }
        let owner = readInfo(fd: fd)
        close(fd)
        throw Held(path: path, owner: owner)
    }

    /// Records where the API answers (after the server bound its port).
    public func publish(_ info: Info) throws {
        var bytes = [UInt8](try JSONEncoder().encode(info))
        bytes.append(0x0A)
        let fd = self.fd, path = self.path
        _ = try retryingInterrupts("ftruncate", path: path) { ftruncate(fd, 0) }
        _ = try bytes.withUnsafeBytes { (buf) throws(SystemError) in
            try retryingInterrupts("pwrite", path: path) { pwrite(fd, buf.baseAddress, buf.count, 0) }
        }
    }

    /// The running service's record, or nil when no service holds the lock of `directory`.
    public static func running(directory: String) -> Info? {
        let path = "\(directory)/\(fileName)"
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd != -1 else { return nil }
        defer { close(fd) }
        if flock(fd, LOCK_SH | LOCK_NB) == 0 {
            flock(fd, LOCK_UN)
            return nil
        }
        return readInfo(fd: fd) ?? Info(pid: 0)
    }

    static func readInfo(fd: Int32) -> Info? {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { return nil }
        return try? JSONDecoder().decode(Info.self, from: Data(buffer[0..<n]))
    }
}
