import Glibc
import Platform

/// One argument of a command line; secrets are passed to the child but shown redacted.
public enum CommandArgument: Sendable, Equatable, ExpressibleByStringLiteral, CustomStringConvertible {
    case plain(String)
    case secret(Secret)

    public init(stringLiteral value: String) { self = .plain(value) }

    var value: String {
        switch self {
        case .plain(let s): return s
        case .secret(let s): return s.revealed
        }
    }

    public var description: String {
        switch self {
        case .plain(let s): return s
        case .secret: return "<redacted>"
        }
    }
}

/// What a finished child process left behind.
public struct ProcessResult: Sendable, Equatable {
    /// Exit status, or nil when it was killed by a signal.
    public var exitCode: Int32?
    public var stdout: String
    public var stderr: String
    public var timedOut: Bool
}

/// Runs an external program with `posix_spawn`, capturing stdout and stderr through
/// pipes, and SIGKILLs it when it outlives `timeout`.
public struct Subprocess: Sendable {
    /// The child's environment (`NAME=value`); the program is looked up on its `PATH`.
    public var environment: [String]

    public init(environment: [String]? = nil) {
        self.environment = environment ?? Self.currentEnvironment()
    }

    public static func currentEnvironment() -> [String] {
        var out: [String] = []
        var p = environ
        while let entry = p.pointee {
            out.append(String(cString: entry))
            p += 1
        }
        return out
    }

    /// The absolute path of `name` on this environment's `PATH` (or `name` itself when it
    /// contains a slash), nil when there is none.
    public func resolve(_ name: String) -> String? {
        if name.contains("/") { return access(name, X_OK) == 0 ? name : nil }
        let pathVar = environment.first { $0.hasPrefix("PATH=") }.map { String($0.dropFirst(5)) }
            ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        for dir in pathVar.split(separator: ":", omittingEmptySubsequences: true) {
            let candidate = "\(dir)/\(name)"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }

    public func run(_ program: String, _ arguments: [CommandArgument], timeout: Double) throws -> ProcessResult {
        guard let path = resolve(program) else {
            throw SystemError("find program", path: program, errno: ENOENT)
        }
        // Close-on-exec from birth: only the dup2'ed copies reach the child, never another concurrent spawn.
        let outEnds = try Descriptor.pipe()
        let outPipe = [outEnds.read, outEnds.write]
        defer { Descriptor.close(outPipe[0]) }
        let errEnds: (read: Int32, write: Int32)
        do { errEnds = try Descriptor.pipe() } catch {
            Descriptor.close(outPipe[1])
            throw error
        }
        let errPipe = [errEnds.read, errEnds.write]
        defer { Descriptor.close(errPipe[0]) }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)

        let argv = ([path] + arguments.map(\.value)).map { strdup($0) } + [nil]
        let envp = environment.map { strdup($0) } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, path, &actions, nil, argv, envp)
        close(outPipe[1])
        close(errPipe[1])
        if rc != 0 { throw SystemError("posix_spawn", path: path, errno: rc) }

        var out: [UInt8] = [], err: [UInt8] = []
        var open = (out: true, err: true)
        var timedOut = false
        let deadline = MonotonicClock.nowSeconds() + timeout
        var buf = [UInt8](repeating: 0, count: 4096)
        while open.out || open.err {
            let remaining = deadline - MonotonicClock.nowSeconds()
            if remaining <= 0 {
                timedOut = true
                kill(pid, SIGKILL)
                break
            }
            var fds = [
                pollfd(fd: open.out ? outPipe[0] : -1, events: Int16(POLLIN), revents: 0),
                pollfd(fd: open.err ? errPipe[0] : -1, events: Int16(POLLIN), revents: 0),
            ]
            let polled = Result { () throws(SystemError) in
                try retryingInterrupts("poll") { poll(&fds, 2, Int32(min(remaining * 1000, 1000)) + 1) }
            }
            guard case .success = polled else {
                kill(pid, SIGKILL)
                break
            }
            for i in 0..<2 where fds[i].revents != 0 {
                let fd = fds[i].fd
                // nil (EAGAIN) keeps the pipe open; end of file or an error closes it.
                let count = buf.withUnsafeMutableBytes { b in
                    Result { () throws(SystemError) in try Descriptor.read(fd, into: b) }
                }
                switch count {
                case .success(let n?) where n > 0:
                    if i == 0 { out += buf[0..<n] } else { err += buf[0..<n] }
                case .success(nil):
                    break
                default:
                    if i == 0 { open.out = false } else { open.err = false }
                }
            }
        }
        // A child that closed its pipes but keeps running still has to honour the deadline.
        var status: Int32 = 0
        while true {
            guard let r = try? retryingInterrupts("waitpid", { waitpid(pid, &status, timedOut ? 0 : WNOHANG) })
            else { break }
            if r == pid { break }
            if MonotonicClock.nowSeconds() >= deadline {
                timedOut = true
                kill(pid, SIGKILL)
                continue
            }
            usleep(2000)
        }
        let exited = (status & 0x7f) == 0
        return ProcessResult(
            exitCode: exited ? (status >> 8) & 0xff : nil,
            stdout: String(decoding: out, as: UTF8.self),
            stderr: String(decoding: err, as: UTF8.self),
            timedOut: timedOut)
    }
}
