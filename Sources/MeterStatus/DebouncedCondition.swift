/// Raise/clear debouncing for one alert: an I/O-free state machine driven by explicit time, so tests can feed
/// synthetic seconds.
///
/// Each sample is classified by the caller against two limits a hysteresis band apart:
/// - `.beyond`: past the raise limit;
/// - `.inBand`: between the two limits: not enough to raise, not enough to clear;
/// - `.within`: back inside the clear limit;
/// - `.unknown`: the inputs needed to judge are missing.
///
/// The alert is raised once `.beyond` held without interruption for `minimumDuration`, and cleared once `.within`
/// held without interruption for `minimumDuration`. `.unknown` drops everything: an alert we can no longer
/// judge is not reported, rather than reported stale.
public struct DebouncedCondition: Sendable, Equatable {
    public enum Sample: Sendable, Equatable {
        case beyond, inBand, within, unknown
    }

    public enum State: Sendable, Equatable {
        case idle
        /// Beyond the raise limit since `since`, not yet long enough.
        case pending(since: Double)
        /// Raised at `raisedAt`.
        case active(raisedAt: Double)
        /// Raised, and back within the clear limit since `since`.
        case clearing(raisedAt: Double, since: Double)
    }

    public private(set) var state: State = .idle
    public var minimumDuration: Double

    public init(minimumDuration: Double) {
        self.minimumDuration = minimumDuration
    }

    /// When the alert was raised, while it is raised (also while it waits to clear).
    public var raisedAt: Double? {
        switch state {
        case .active(let raisedAt), .clearing(let raisedAt, _): return raisedAt
        case .idle, .pending: return nil
        }
    }

    public var isRaised: Bool { raisedAt != nil }

    /// Feeds one sample taken at `now` (seconds on any monotonic scale). Returns whether the alert is raised.
    @discardableResult
    public mutating func update(_ sample: Sample, now: Double) -> Bool {
        switch (state, sample) {
        case (_, .unknown):
            state = .idle
        case (.idle, .beyond):
            state = .pending(since: now)
        case (.idle, _):
            break
        case (.pending, .inBand), (.pending, .within):
            // Raising needs the condition to hold without a break; a dip below the raise limit restarts it.
            state = .idle
        case (.pending, .beyond):
            break
        case (.active(let raisedAt), .within):
            state = .clearing(raisedAt: raisedAt, since: now)
        case (.active, _):
            break
        case (.clearing(let raisedAt, _), .beyond), (.clearing(let raisedAt, _), .inBand):
            // Not gone past the hysteresis band: the clearing clock starts over.
            state = .active(raisedAt: raisedAt)
        case (.clearing, .within):
            break
        }
        settle(now: now)
        return isRaised
    }

    /// Moves on when a timer has run out. A clock that stepped backwards restarts the running timer instead of
    /// counting a negative time as elapsed.
    private mutating func settle(now: Double) {
        switch state {
        case .pending(let since):
            if now < since { state = .pending(since: now) } else if now - since >= minimumDuration {
                state = .active(raisedAt: now)
            }
        case .clearing(let raisedAt, let since):
            if now < since { state = .clearing(raisedAt: raisedAt, since: now) } else if now - since >= minimumDuration {
                state = .idle
            }
        case .idle, .active:
            break
        }
    }
}
