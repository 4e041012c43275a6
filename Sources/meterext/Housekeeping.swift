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
