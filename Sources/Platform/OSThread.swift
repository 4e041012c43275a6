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
