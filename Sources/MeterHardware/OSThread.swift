#if canImport(Glibc)
import Glibc
#endif

/// A plain POSIX thread for loops that must not share an executor with async code (the poll loop, the
/// simulator's slave loop). Foundation's `Thread` is not in FoundationEssentials.
public final class OSThread {
    private var handle: pthread_t
    private var joined = false

    private final class Body {
        let run: () -> Void
        init(_ run: @escaping () -> Void) { self.run = run }
    }

    /// Starts `body` on a new thread. `name` goes into error messages.
    public init(name: String, _ body: @escaping () -> Void) throws(SystemError) {
        let box = Unmanaged.passRetained(Body(body))
        var tid = pthread_t()
        let rc = pthread_create(&tid, nil, { context in
            let body = Unmanaged<Body>.fromOpaque(context!).takeRetainedValue()
            body.run()
            return nil
        }, box.toOpaque())
        guard rc == 0 else {
            box.release()
            throw SystemError(operation: "pthread_create", errno: rc, detail: name)
        }
        handle = tid
    }

    /// Waits for the thread to finish. Safe to call more than once.
    public func join() {
        guard !joined else { return }
        joined = true
        if pthread_equal(pthread_self(), handle) == 0 { pthread_join(handle, nil) }
    }

    public var isCurrent: Bool { pthread_equal(pthread_self(), handle) != 0 }
}
