import Platform
import Synchronization

/// Decides whether the service as a whole is alive. Each subsystem (the Modbus poll loop, the HTTP server, …) calls
/// `beat(_:)` from its own loop; `WATCHDOG=1` may only go out when every registered subsystem beat within
/// `staleAfter`. A hung poll loop then makes systemd restart the service even though the HTTP server still answers,
/// and vice versa — a process that merely exists is not "alive".
public final class WatchdogGate: Sendable {
    public struct Subsystem: Sendable, Hashable, CustomStringConvertible {
        public let name: String
        public init(_ name: String) { self.name = name }
        public var description: String { name }

        public static let pollLoop = Subsystem("poll-loop")
        public static let http = Subsystem("http")
    }

    private let lastBeat: Mutex<[Subsystem: Duration?]>
    private let now: MonotonicNow
    public let staleAfter: Duration

    /// Every subsystem in `subsystems` must beat before the first ping: one that never started is not alive.
    public init(subsystems: [Subsystem], staleAfter: Duration, now: @escaping MonotonicNow = systemMonotonicNow) {
        self.lastBeat = Mutex(Dictionary(uniqueKeysWithValues: subsystems.map { ($0, nil) }))
        self.staleAfter = staleAfter
        self.now = now
    }

    /// Reports that `subsystem` made progress. Beats from unregistered subsystems are ignored (and would be a bug).
    public func beat(_ subsystem: Subsystem) {
        let t = now()
        lastBeat.withLock { beats in
            if beats.keys.contains(subsystem) { beats[subsystem] = .some(t) }
        }
    }

    /// Registered subsystems that never beat or whose last beat is older than `staleAfter`, sorted by name.
    public func staleSubsystems() -> [Subsystem] {
        let t = now()
        return lastBeat.withLock { beats in
            beats.compactMap { subsystem, last in
                guard let last else { return subsystem }
                return t - last > staleAfter ? subsystem : nil
            }
        }.sorted { $0.name < $1.name }
    }

    public var isHealthy: Bool { staleSubsystems().isEmpty }
}

extension SystemdNotifier {
    /// Sends `WATCHDOG=1` only when `gate` is healthy; returns the stale subsystems otherwise (nothing is sent, so
    /// systemd's `WatchdogSec=` runs out and restarts the service if they stay stale).
    @discardableResult
    public func watchdogIfHealthy(_ gate: WatchdogGate) throws(NotifyError) -> [WatchdogGate.Subsystem] {
        let stale = gate.staleSubsystems()
        if stale.isEmpty { try watchdog() }
        return stale
    }

    /// One watchdog round (the housekeeping thread runs one every half `WatchdogSec=`): WATCHDOG=1 only when
    /// `gate` is healthy; stale subsystems are logged (rate-limited by the logger) so the journal says why systemd
    /// is about to restart the service, and so is an unreachable notify socket.
    public func watchdogRound(gate: WatchdogGate, logger: Logger) {
        do {
            let stale = try watchdogIfHealthy(gate)
            if stale.isEmpty {
                logger.recovered(key: "watchdog.stale", "watchdog: all subsystems alive again")
            } else {
                logger.failure(key: "watchdog.stale", level: .warning,
                    "watchdog: not pinging systemd, no progress from \(stale.map(\.name).joined(separator: ", "))")
            }
            logger.recovered(key: "watchdog.notify", "watchdog: notify socket reachable again")
        } catch {
            logger.failure(key: "watchdog.notify", error.description)
        }
    }
}
