import CPlatform
import Glibc

/// A plain, named POSIX thread for loops that must not share an executor with async code (the poll loop, the
/// simulator's slave loop, downloads that block in libcurl for minutes). Foundation's `Thread` is not in
/// FoundationEssentials.
///
/// The name reaches the kernel (pthread_setname_np, cut to 15 bytes), so `top -H`, `ps -L` and
/// /proc/PID/task/*/comm show `meterext-poll`. When the thread cannot be created the initializer throws: the body
/// never runs on the caller's thread instead.
public final class OSThread: @unchecked Sendable {
    private let handle: pthread_t
    private var joined = false
    private let detached: Bool
    public let name: String

    private final class Body {
        let name: String
        let run: () -> Void
        init(_ name: String, _ run: @escaping () -> Void) {
            self.name = name
            self.run = run
        }
    }

    /// Starts `body` on a new thread named `name`; `join()` waits for it.
    public convenience init(name: String, _ body: @escaping () -> Void) throws(SystemError) {
        try self.init(name: name, detached: false, body)
    }

    private init(name: String, detached: Bool, _ body: @escaping () -> Void) throws(SystemError) {
        let box = Unmanaged.passRetained(Body(name, body))
        var tid = pthread_t()
        let rc = pthread_create(&tid, nil, { context in
            let body = Unmanaged<Body>.fromOpaque(context!).takeRetainedValue()
            _ = meterext_thread_set_name(body.name)
            body.run()
            return nil
        }, box.toOpaque())
        guard rc == 0 else {
            box.release()
            throw SystemError(operation: "pthread_create", errno: rc, detail: name)
        }
        handle = tid
        self.name = name
        self.detached = detached
        if detached { pthread_detach(tid) }
    }

    /// Starts `body` on a new detached thread named `name` (nobody joins it; it ends when `body` returns).
    public static func detach(name: String, _ body: @escaping @Sendable () -> Void) throws(SystemError) {
        _ = try OSThread(name: name, detached: true, body)
    }

    /// Runs `body` on a new detached thread named `name` and returns its result: for blocking work (downloads,
    /// fsync-heavy writes) that must not sit on Swift's cooperative pool (two threads on a two-core board).
    public static func run<T: Sendable>(name: String, _ body: @escaping @Sendable () -> T) async throws(SystemError)
        -> T
    {
        var failure: SystemError?
        let result: T? = await withCheckedContinuation { (continuation: CheckedContinuation<T?, Never>) in
            do throws(SystemError) {
                try detach(name: name) { continuation.resume(returning: body()) }
            } catch {
                failure = error
                continuation.resume(returning: nil)
            }
        }
        if let failure { throw failure }
        return result!
    }

    /// Waits for the thread to finish. Safe to call more than once; a no-op on a detached thread and on the thread
    /// itself.
    public func join() {
        guard !joined, !detached else { return }
        joined = true
        if pthread_equal(pthread_self(), handle) == 0 { pthread_join(handle, nil) }
    }

    public var isCurrent: Bool { pthread_equal(pthread_self(), handle) != 0 }
}

/// Real-time scheduling for a latency-critical thread (the poll thread releases the RS485 DE line to the computed
/// end of a frame: a late wake-up under load holds the bus past t3.5).
public enum RealtimeScheduling {
    /// What `applyToCurrentThread` could do. Both parts are independent: a unit may grant one and not the other.
    public struct Outcome: Equatable, Sendable {
        /// SCHED_FIFO at `priority` is in effect for the calling thread.
        public var fifo: Bool
        /// The process's memory is locked (mlockall, pages locked as they are touched).
        public var memoryLocked: Bool
        /// Why a part was not applied (errno text), empty when both were.
        public var reasons: [String]

        /// One line for the log, nil when everything was applied.
        public var message: String? {
            guard !reasons.isEmpty else { return nil }
            return "poll thread runs without real-time guarantees: " + reasons.joined(separator: "; ")
                + " (the systemd unit grants CAP_SYS_NICE and LimitMEMLOCK=infinity)"
        }
    }

    /// SCHED_FIFO priority for the poll thread: above the kernel's default threaded-IRQ priority is not needed,
    /// anything above SCHED_OTHER is.
    public static let defaultPriority: Int32 = 10

    /// Moves the calling thread to SCHED_FIFO at `priority` and locks the process's memory, each when permitted.
    /// Memory is locked with MCL_ONFAULT: pages are locked as they are touched, nothing is pre-faulted, so the
    /// resident set does not grow (thread stacks stay as small as they were). Only attempted when RLIMIT_MEMLOCK
    /// is unlimited (or CAP_IPC_LOCK lifts it): under a finite limit MCL_FUTURE would make later mappings fail.
    public static func applyToCurrentThread(priority: Int32 = defaultPriority, lockMemory: Bool = true) -> Outcome {
        var outcome = Outcome(fifo: false, memoryLocked: false, reasons: [])
        var param = sched_param()
        param.sched_priority = priority
        let rc = pthread_setschedparam(pthread_self(), Int32(SCHED_FIFO), &param)
        if rc == 0 {
            outcome.fifo = true
        } else {
            outcome.reasons.append("SCHED_FIFO refused (\(String(cString: strerror(rc))))")
        }
        if lockMemory {
            var limit = rlimit()
            getrlimit(__rlimit_resource_t(__RLIMIT_MEMLOCK.rawValue), &limit)
            if limit.rlim_cur != rlim_t.max {  // RLIM_INFINITY
                outcome.reasons.append("memory not locked (LimitMEMLOCK is \(limit.rlim_cur / 1024) KiB, not infinity)")
            } else if mlockall(MCL_CURRENT | MCL_FUTURE | 4 /* MCL_ONFAULT */) == 0 {
                outcome.memoryLocked = true
            } else {
                outcome.reasons.append("mlockall refused (\(String(cString: strerror(errno))))")
            }
        }
        return outcome
    }

    /// The current thread's policy is SCHED_FIFO (for checks and the benchmark).
    public static var currentThreadIsFIFO: Bool {
        var policy: Int32 = 0
        var param = sched_param()
        return pthread_getschedparam(pthread_self(), &policy, &param) == 0 && policy == Int32(SCHED_FIFO)
    }
}
