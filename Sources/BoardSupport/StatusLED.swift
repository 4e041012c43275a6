import Platform
import Synchronization

/// A digital output the board support drives (the status LED). The GPIO implementation lives in MeterHardware;
/// tests use a recorder.
public protocol OutputLine: Sendable {
    func set(_ on: Bool) throws
}

/// What the status LED tells an installer standing in front of the board.
public enum StatusLEDState: Sendable, Hashable, CaseIterable {
    /// Set-up mode (access point / waiting for configuration): fast blink, 5 Hz.
    case setup
    /// Meter (every meter) answering: on, with a short dark blip every 3 s — a frozen process leaves the LED steady, so the blip
    /// shows the firmware is running, not just that it once switched the LED on.
    case meterOnline
    /// A meter not answering (unplugged, wrong address, A/B swapped): double blink every 1.5 s.
    case meterOffline
    /// LED dark (shutting down).
    case off

    /// What the LED shows: set-up while the access point is open, else "online" only when every one of the `meters`
    /// on the bus answers (`answering` of them; issue 17) — one silent meter of three is a wiring or address fault
    /// the installer must see. Counts, not a list: the LED is set every 50 ms and must not allocate.
    public static func showing(accessPointOpen: Bool, answering: Int, of meters: Int) -> StatusLEDState {
        if accessPointOpen { return .setup }
        return meters > 0 && answering == meters ? .meterOnline : .meterOffline
    }
}

/// A repeating on/off pattern: the LED is on during each `[start, end)` span within `period`.
public struct BlinkPattern: Sendable, Equatable {
    public let period: Duration
    public let onSpans: [Range<Duration>]

    public init(period: Duration, onSpans: [Range<Duration>]) {
        self.period = period
        self.onSpans = onSpans
    }

    public static func pattern(for state: StatusLEDState) -> BlinkPattern {
        switch state {
        case .setup:
            BlinkPattern(period: .milliseconds(200), onSpans: [.zero..<(.milliseconds(100))])
        case .meterOnline:
            BlinkPattern(period: .milliseconds(3000), onSpans: [.zero..<(.milliseconds(2900))])
        case .meterOffline:
            BlinkPattern(period: .milliseconds(1500), onSpans: [
                .zero..<(.milliseconds(150)), .milliseconds(300)..<(.milliseconds(450)),
            ])
        case .off:
            BlinkPattern(period: .seconds(1), onSpans: [])
        }
    }

    /// Whether the LED is on at time `t` (any monotonic time; the phase is `t` modulo `period`).
    public func isOn(at t: Duration) -> Bool {
        let periodNs = period.nanoseconds
        var phaseNs = t.nanoseconds % periodNs
        if phaseNs < 0 { phaseNs += periodNs }
        let phase = Duration.nanoseconds(phaseNs)
        return onSpans.contains { $0.contains(phase) }
    }

    /// The pure function the driver applies: LED level for `state` at `t`.
    public static func isOn(_ state: StatusLEDState, at t: Duration) -> Bool {
        pattern(for: state).isOn(at: t)
    }
}

extension Duration {
    /// Whole nanoseconds (patterns are far below the ~292-year range of Int64 nanoseconds).
    var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds &* 1_000_000_000 &+ attoseconds / 1_000_000_000
    }
}

/// Applies the pattern for the current state to an `OutputLine`. `tick()` writes the line only when the level
/// changes, so a 50 ms timer costs a GPIO write a few times per second, not twenty.
public final class StatusLEDDriver: Sendable {
    private struct State {
        var ledState: StatusLEDState = .meterOffline
        var lastLevel: Bool?
    }

    private let line: any OutputLine
    private let now: MonotonicNow
    private let logger: Logger?
    private let state = Mutex(State())

    public init(line: any OutputLine, initialState: StatusLEDState = .meterOffline, logger: Logger? = nil,
                now: @escaping MonotonicNow = systemMonotonicNow) {
        self.line = line
        self.now = now
        self.logger = logger
        state.withLock { $0.ledState = initialState }
    }

    public var ledState: StatusLEDState {
        get { state.withLock { $0.ledState } }
        set { state.withLock { $0.ledState = newValue } }
    }

    /// Sets the line to the pattern's level for now. A failed write is logged (rate-limited) and retried next tick.
    public func tick() {
        let t = now()
        state.withLock { s in
            let level = BlinkPattern.isOn(s.ledState, at: t)
            guard level != s.lastLevel else { return }
            do {
                try line.set(level)
                s.lastLevel = level
                logger?.recovered(key: "status-led", "status LED: writes succeed again")
            } catch {
                s.lastLevel = nil
                logger?.failure(key: "status-led", level: .warning, "status LED: \(error)")
            }
        }
    }

    /// Ticks every `interval` until the task is cancelled, then switches the LED off.
    public func run(interval: Duration = .milliseconds(50)) async {
        while !Task.isCancelled {
            tick()
            try? await Task.sleep(for: interval)
        }
        ledState = .off
        tick()
    }
}
