import CGPIOD
import Glibc

/// CLOCK_MONOTONIC in nanoseconds: the one time base for frame timing, DE release and the benchmark.
///
/// Never wall-clock time: NTP steps it, and a Modbus gap measured across a step would be nonsense.
public enum MonotonicClock {
    /// The corresponding C function is `clock_gettime(CLOCK_MONOTONIC)`.
    @inline(__always)
    public static func nowNanos() -> UInt64 {
        var ts = timespec()
        // Cannot fail for CLOCK_MONOTONIC with a valid pointer.
        _ = clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }

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
        _ = try retryingInterrupts("set timer slack (PR_SET_TIMERSLACK)", path: nil) {
            meterext_set_timer_slack_ns(UInt(max(1, nanos)))
        }
    }

    /// The calling thread's current timer slack in nanoseconds.
    public static func timerSlackForCurrentThread() -> UInt64 {
        UInt64(max(0, meterext_get_timer_slack_ns()))
    }
}
