import CPlatform
import Glibc

/// The one time base for everything that measures intervals: frame timing, DE release, deadlines, the poll
/// schedule, the watchdog gate, LED patterns, subprocess timeouts.
///
/// CLOCK_MONOTONIC, chosen once for all of them: it is the clock `ppoll` and `clock_nanosleep` count their
/// timeouts on, and the one systemd's watchdog uses, so a deadline computed here means the same thing to the kernel.
/// Never wall-clock time: NTP steps it (common right after a Pi boots without an RTC), and a Modbus gap or a
/// watchdog interval measured across a step would be nonsense. Not CLOCK_BOOTTIME: a board does not suspend, and a
/// clock that counts suspended time would disagree with every kernel timeout. Two readings of this clock are
/// always comparable; readings of any other clock must never be mixed with it.
public enum MonotonicClock {
    /// Nanoseconds since an arbitrary fixed point. The corresponding C function is `clock_gettime(CLOCK_MONOTONIC)`.
    @inline(__always)
    public static func nowNanos() -> UInt64 {
        var ts = timespec()
        // Cannot fail for CLOCK_MONOTONIC with a valid pointer.
        _ = clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }

    /// The same reading as a `Duration`.
    @inline(__always)
    public static func now() -> Duration { .nanoseconds(Int64(nowNanos())) }

    /// The same reading in seconds, for coarse timeouts (subprocesses).
    public static func nowSeconds() -> Double { Double(nowNanos()) / 1e9 }

    /// Sleeps until the monotonic clock reaches `untilNanos`; returns at once if it already has.
    ///
    /// Absolute-time `clock_nanosleep`, retried on EINTR with the same deadline, so a signal neither cuts the
    /// sleep short nor stretches it (a relative sleep restarted after EINTR would oversleep).
    public static func sleep(untilNanos deadline: UInt64) {
        var ts = timespec(
            tv_sec: Int(deadline / 1_000_000_000),
            tv_nsec: Int(deadline % 1_000_000_000))
        while true {
            let result = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nil)
            // clock_nanosleep returns the error number itself; anything but EINTR (EINVAL can only come from a
            // malformed timespec, which the arithmetic above can't produce) ends the wait.
            if result != EINTR { return }
        }
    }

    /// Sleeps for `nanos` from now.
    public static func sleep(nanos: UInt64) {
        sleep(untilNanos: nowNanos() &+ nanos)
    }

    /// Sets the calling thread's timer slack: how late the kernel may wake a sleep to batch timers. The default,
    /// 50 µs, lands on every `sleep(untilNanos:)` of the DE turnaround; the thread that runs the Modbus master
    /// should set about 1 µs. Applies to the calling thread only (prctl PR_SET_TIMERSLACK).
    public static func setTimerSlackForCurrentThread(nanos: UInt64) throws(SystemError) {
        _ = try retryingInterrupts("set timer slack (PR_SET_TIMERSLACK)") {
            meterext_set_timer_slack_ns(UInt(max(1, nanos)))
        }
    }

    /// The calling thread's current timer slack in nanoseconds.
    public static func timerSlackForCurrentThread() -> UInt64 {
        UInt64(max(0, meterext_get_timer_slack_ns()))
    }
}

/// Reads "now" on `MonotonicClock` as a duration since an arbitrary fixed point. Everything time-based above this
/// layer takes one of these (or `PollClock`, which wraps one) so tests can drive time by hand instead of sleeping.
public typealias MonotonicNow = @Sendable () -> Duration

/// `MonotonicClock.now`, as the injectable default.
public let systemMonotonicNow: MonotonicNow = { MonotonicClock.now() }

/// Unix time in whole seconds (CLOCK_REALTIME): only for timestamps shown to people or sent to clients, never for
/// measuring an interval.
public func wallClockSeconds() -> Int64 {
    var ts = timespec()
    _ = clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec)
}
