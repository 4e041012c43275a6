import CPlatform
import Glibc
import Synchronization

/// Issue 18 (idle work): periodic duties on one named thread (the service's `meterext-tick`) that sleeps on the
/// monotonic clock between rounds and allocates nothing per round. Before, each duty was a detached `Task` whose
/// `Task.sleep` allocated about seven blocks per sleep (task, timer source, continuation).
///
/// Rounds run every `period` on absolute deadlines (a slow round does not shift the schedule); each duty says every
/// how many rounds it runs. `stop()` wakes the thread at once (a pipe) and joins it.
public final class PeriodicThread: @unchecked Sendable {
    public struct Duty {
        /// Runs on every `every`-th round, the first round included.
        public var every: UInt64
        public var run: () -> Void
        /// Runs once when the thread stops (the LED goes dark).
        public var atStop: (() -> Void)?

        public init(every: UInt64, run: @escaping () -> Void, atStop: (() -> Void)? = nil) {
            self.every = max(1, every)
            self.run = run
            self.atStop = atStop
        }
    }

    public let period: UInt64
    private let duties: [Duty]
    /// A pipe: `stop()` writes a byte to end the sleep at once.
    private var wake: (read: Int32, write: Int32) = (-1, -1)
    private let running = Atomic<Bool>(false)
    private var thread: OSThread?

    /// - Parameter periodNanos: the time between rounds.
    public init(periodNanos: UInt64, duties: [Duty]) {
        period = max(1_000_000, periodNanos)
        self.duties = duties
        var fds: [Int32] = [-1, -1]
        if meterext_pipe2(&fds, O_CLOEXEC) == 0 { wake = (fds[0], fds[1]) }
    }

    deinit {
        if wake.read >= 0 { close(wake.read) }
        if wake.write >= 0 { close(wake.write) }
    }

    public func start(name: String) throws(SystemError) {
        running.store(true, ordering: .releasing)
        thread = try OSThread(name: name) { [self] in loop() }
    }

    public func stop() {
        guard running.exchange(false, ordering: .acquiringAndReleasing) else { return }
        var byte: UInt8 = 1
        _ = write(wake.write, &byte, 1)
        thread?.join()
        thread = nil
    }

    private func loop() {
        var round: UInt64 = 0
        var next = MonotonicClock.nowNanos()
        while running.load(ordering: .acquiring) {
            for duty in duties where round % duty.every == 0 { duty.run() }
            round &+= 1
            next &+= period
            let now = MonotonicClock.nowNanos()
            // Far behind (a suspended process, a debugger): start the schedule over instead of catching up.
            if now > next &+ 10 &* period { next = now &+ period }
            waitForStop(until: next)
        }
        for duty in duties { duty.atStop?() }
    }

    /// Sleeps until the monotonic clock reaches `deadline`, unless `stop()` writes the pipe first (a signal does not
    /// cut the sleep short; without the pipe: a plain sleep).
    private func waitForStop(until deadline: UInt64) {
        guard wake.read >= 0 else { return MonotonicClock.sleep(untilNanos: deadline) }
        while running.load(ordering: .acquiring) {
            let now = MonotonicClock.nowNanos()
            guard deadline > now else { return }
            if meterext_poll_one(wake.read, Int16(POLLIN), Int64(min(deadline - now, UInt64(Int64.max)))) > 0 { return }
        }
    }
}
