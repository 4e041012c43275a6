import BoardSupport
import Dispatch
import Platform
import Synchronization

/// The service's periodic duties (status engines, watchdog, WiFi tick, LED) run on one `PeriodicThread` named
/// `meterext-tick` (issue 18).
enum Housekeeping {
    typealias Duty = PeriodicThread.Duty

    /// Hands `work` to `queue` with no allocation per hand-over beyond libdispatch's own continuation, and never
    /// more than one at a time: a tick still waiting behind a slow WiFi operation is not queued twice.
    final class QueuedWork: @unchecked Sendable {
        private let queue: DispatchQueue
        private var item: DispatchWorkItem!
        private let pending = Atomic<Bool>(false)

        init(queue: DispatchQueue, _ work: @escaping @Sendable () -> Void) {
            self.queue = queue
            item = DispatchWorkItem { [unowned self] in
                pending.store(false, ordering: .releasing)
                work()
            }
        }

        func submit() {
            guard !pending.exchange(true, ordering: .acquiringAndReleasing) else { return }
            queue.async(execute: item)
        }
    }
}

extension SystemdNotifier {
    /// One round of `runWatchdog` (BoardSupport), for the housekeeping thread: WATCHDOG=1 only when `gate` is
    /// healthy; stale subsystems and an unreachable notify socket are logged (rate-limited by the logger).
    func watchdogRound(gate: WatchdogGate, logger: Logger) {
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
