import Glibc
import Platform
import Synchronization

/// The set-up button's debounce, without I/O: edges with their monotonic time in, "a press" out. A press is a
/// falling edge (the button shorts the pulled-up line to ground) at least `lockout` after the last accepted press;
/// the bounces of one press (a few ms of alternating edges) and a held button count once.
public struct SetupButtonDebouncer: Sendable, Equatable {
    public var lockout: Double
    var lastPress: Double?
    var isDown = false

    public init(lockout: Double = 0.3) { self.lockout = lockout }

    /// True when this edge is a new press.
    public mutating func edge(pressed: Bool, at now: Double) -> Bool {
        defer { isDown = pressed }
        guard pressed, !isDown else { return false }
        if let last = lastPress, now - last < lockout { return false }
        lastPress = now
        return true
    }
}

/// Where the edges come from: the GPIO line on a board (`GPIOButtonLine`), a script in tests.
public protocol ButtonEdgeSource: AnyObject, Sendable {
    /// The next edge within `timeoutMs` (true: pressed, false: released), nil on timeout. Throws when the line is
    /// gone.
    func nextEdge(timeoutMs: Int32) throws -> Bool?
}

/// Waits for edges on its own thread and calls `onPress` for each debounced press (the service opens the access
/// point). A line that fails is reported once and retried after a pause; `stop()` ends the loop within one wait.
public final class SetupButtonWatcher: Sendable {
    let source: any ButtonEdgeSource
    let onPress: @Sendable () -> Void
    let log: @Sendable (String) -> Void
    let now: @Sendable () -> Double
    private let running = Atomic<Bool>(true)
    private let debouncer: Mutex<SetupButtonDebouncer>

    public init(source: any ButtonEdgeSource, debouncer: SetupButtonDebouncer = SetupButtonDebouncer(),
                now: @escaping @Sendable () -> Double = { MonotonicClock.nowSeconds() },
                log: @escaping @Sendable (String) -> Void = { _ in }, onPress: @escaping @Sendable () -> Void) {
        self.source = source
        self.onPress = onPress
        self.log = log
        self.now = now
        self.debouncer = Mutex(debouncer)
    }

    /// One wait and its outcome (the loop body; tests call it directly).
    public func step(timeoutMs: Int32 = 500) throws {
        guard let pressed = try source.nextEdge(timeoutMs: timeoutMs) else { return }
        let t = now()
        if debouncer.withLock({ $0.edge(pressed: pressed, at: t) }) { onPress() }
    }

    public func start() throws {
        try OSThread.detach(name: "setup-button") { [self] in
            var failing = false
            while running.load(ordering: .relaxed) {
                do {
                    try step()
                    if failing { log("set-up button: works again"); failing = false }
                } catch {
                    if !failing { log("set-up button: \(error)") }
                    failing = true
                    usleep(1_000_000)
                }
            }
        }
    }

    public func stop() { running.store(false, ordering: .relaxed) }
}
