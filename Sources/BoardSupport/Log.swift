import Platform
import Glibc
import Synchronization

/// Severity, numbered like syslog / sd-daemon.h (`SD_ERR` 3, `SD_WARNING` 4, `SD_INFO` 6, `SD_DEBUG` 7) so the number
/// is also the `<N>` prefix journald reads from a service's stdout/stderr.
public enum LogLevel: Int, Sendable, Comparable, CaseIterable, CustomStringConvertible, Decodable {
    case error = 3
    case warning = 4
    case info = 6
    case debug = 7

    /// The names accepted by `--log-level` and the config file's `log_level`.
    public var description: String {
        switch self {
        case .error: "error"
        case .warning: "warning"
        case .info: "info"
        case .debug: "debug"
        }
    }

    /// Parses `error|warning|info|debug` (case-insensitive; `warn` and `err` accepted as the usual abbreviations).
    public init(parsing text: String) throws(LogLevelError) {
        switch text.lowercased() {
        case "error", "err": self = .error
        case "warning", "warn": self = .warning
        case "info": self = .info
        case "debug": self = .debug
        default: throw LogLevelError(text: text)
        }
    }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        do { self = try LogLevel(parsing: text) } catch {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: error.description))
        }
    }

    /// Ordered like syslog: more severe is smaller, so `level <= threshold` reads "at least as severe as the threshold".
    public static func < (a: LogLevel, b: LogLevel) -> Bool { a.rawValue < b.rawValue }
}

public struct LogLevelError: Error, CustomStringConvertible, Equatable {
    public let text: String
    public var description: String { "unknown log level '\(text)' (expected one of: error, warning, info, debug)" }
}

/// Where finished lines go. One call per line, so a line is never interleaved with another writer's.
public protocol LogSink: Sendable {
    func write(line: String, level: LogLevel)
}

/// stdout for info/debug, stderr for warnings and errors; journald gets both through the service's stream.
public struct StandardStreamSink: LogSink {
    public init() {}
    public func write(line: String, level: LogLevel) {
        let fd: Int32 = level <= .warning ? STDERR_FILENO : STDOUT_FILENO
        var line = line
        // A short write or EINTR must not drop the tail of the line; any other error has nowhere left to be reported.
        line.withUTF8 { buffer in _ = try? Descriptor.writeAll(fd, UnsafeRawBufferPointer(buffer)) }
    }
}

/// How a line looks. `journal` adds the `<N>` priority prefix journald strips and turns into PRIORITY=;
/// `plain` is for a terminal, where the prefix would only be noise.
public enum LogStyle: Sendable {
    case journal
    case plain

    /// systemd sets `$JOURNAL_STREAM` to "DEV:INODE" of the stream it connected; only when stderr still is that
    /// stream (not redirected by a wrapper) does the prefix reach journald rather than a file or terminal.
    public static func detect(environment: (String) -> String? = { getenv($0).map { String(cString: $0) } }) -> LogStyle {
        guard let value = environment("JOURNAL_STREAM") else { return .plain }
        let parts = value.split(separator: ":")
        guard parts.count == 2, let dev = UInt64(parts[0]), let ino = UInt64(parts[1]) else { return .plain }
        var st = stat()
        guard fstat(STDERR_FILENO, &st) == 0 else { return .plain }
        return UInt64(st.st_dev) == dev && UInt64(st.st_ino) == ino ? .journal : .plain
    }

    /// One line, newline-terminated. Embedded newlines are replaced so one message stays one journal entry.
    public func format(_ level: LogLevel, _ message: String) -> String {
        let body = message.contains(where: \.isNewline)
            ? String(message.map { $0.isNewline ? " " : $0 }) : message
        switch self {
        case .journal: return "<\(level.rawValue)>\(body)\n"
        case .plain: return "\(level): \(body)\n"
        }
    }
}

/// Thread-safe logger with a level threshold and rate limiting of repeated failures.
///
/// A failure is reported under a key (e.g. `"meter.timeout"`): the first occurrence is logged, the following ones are
/// only counted, and at most once per `repeatInterval` a summary line "… (repeated N times)" is written. `recovered(key:)`
/// ends the episode with one line. A meter unplugged for a week therefore costs a few lines per minute, not 10 per second.
public final class Logger: Sendable {
    private struct Episode {
        var message: String
        var level: LogLevel
        var lastWritten: Duration
        var suppressed: Int
        var total: Int
    }
    private struct State {
        var threshold: LogLevel
        var episodes: [String: Episode] = [:]
    }

    private let state: Mutex<State>
    private let sink: any LogSink
    private let style: LogStyle
    private let now: MonotonicNow
    public let repeatInterval: Duration

    public init(
        level: LogLevel = .info, style: LogStyle = .detect(), sink: any LogSink = StandardStreamSink(),
        repeatInterval: Duration = .seconds(60), now: @escaping MonotonicNow = systemMonotonicNow
    ) {
        self.state = Mutex(State(threshold: level))
        self.sink = sink
        self.style = style
        self.repeatInterval = repeatInterval
        self.now = now
    }

    public var level: LogLevel {
        get { state.withLock { $0.threshold } }
        set { state.withLock { $0.threshold = newValue } }
    }

    /// Whether a message at `level` would be written; lets callers skip building expensive debug text.
    public func isEnabled(_ level: LogLevel) -> Bool { level <= self.level }

    public func log(_ level: LogLevel, _ message: @autoclosure () -> String) {
        guard isEnabled(level) else { return }
        let line = style.format(level, message())
        // The sink is called under the lock so lines from different threads come out whole and in order.
        state.withLock { _ in sink.write(line: line, level: level) }
    }

    public func error(_ message: @autoclosure () -> String) { log(.error, message()) }
    public func warning(_ message: @autoclosure () -> String) { log(.warning, message()) }
    public func info(_ message: @autoclosure () -> String) { log(.info, message()) }
    public func debug(_ message: @autoclosure () -> String) { log(.debug, message()) }

    /// Reports one occurrence of a recurring failure. Only the first of an episode, and a summary at most once per
    /// `repeatInterval`, are written. The latest message text is kept, so the summary shows the current cause.
    public func failure(key: String, level: LogLevel = .error, _ message: String) {
        let t = now()
        state.withLock { s in
            guard var episode = s.episodes[key] else {
                s.episodes[key] = Episode(message: message, level: level, lastWritten: t, suppressed: 0, total: 1)
                if level <= s.threshold { sink.write(line: style.format(level, message), level: level) }
                return
            }
            episode.total += 1
            episode.message = message
            if t - episode.lastWritten >= repeatInterval {
                let n = episode.suppressed + 1
                if level <= s.threshold {
                    sink.write(line: style.format(level, "\(message) (repeated \(n) times)"), level: level)
                }
                episode.suppressed = 0
                episode.lastWritten = t
            } else {
                episode.suppressed += 1
            }
            s.episodes[key] = episode
        }
    }

    /// Ends a failure episode: writes one info line saying how many failures it spanned. Does nothing when `key`
    /// has no episode running, so callers may call it on every success.
    public func recovered(key: String, _ message: String) {
        state.withLock { s in
            guard let episode = s.episodes.removeValue(forKey: key) else { return }
            if LogLevel.info <= s.threshold {
                let text = "\(message) (after \(episode.total) failures)"
                sink.write(line: style.format(.info, text), level: .info)
            }
        }
    }

    /// Keys of failure episodes currently running (for a status line).
    public var activeFailures: [String] { state.withLock { $0.episodes.keys.sorted() } }
}
