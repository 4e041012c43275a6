import Glibc

/// Reads "now" as a duration since an arbitrary fixed point. Everything time-based in BoardSupport (watchdog gate,
/// LED patterns, log rate limiting) takes one of these so tests can drive time by hand instead of sleeping.
public typealias MonotonicNow = @Sendable () -> Duration

/// CLOCK_MONOTONIC: wall-clock steps from NTP (common right after a Pi boots without an RTC) must not make the
/// watchdog gate think a subsystem stalled, nor un-suppress a rate-limited error.
public let systemMonotonicNow: MonotonicNow = {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return .seconds(Int64(ts.tv_sec)) + .nanoseconds(Int64(ts.tv_nsec))
}
