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
}
