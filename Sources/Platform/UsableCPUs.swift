import CPlatform

/// How many CPUs this process may run on, for sizing thread pools "one per core".
///
/// SwiftNIO's `System.coreCount` counts online CPUs narrowed by a cgroup's CPU quota or cpuset, but not the affinity
/// mask: under `taskset -c 1` or a unit's `CPUAffinity=1` it still says 2, and two event loops then share one core
/// and wait for each other's time slices.
public enum UsableCPUs {
    /// CPUs in the calling thread's affinity mask (inherited from the process's start); nil when the kernel refuses.
    public static func inAffinityMask() -> Int? {
        let count = meterext_usable_cpus()
        return count > 0 ? Int(count) : nil
    }

    /// `systemCount` (SwiftNIO's figure) narrowed by the affinity mask; at least 1.
    public static func threads(systemCount: Int, affinity: Int? = inAffinityMask()) -> Int {
        max(1, min(systemCount, affinity ?? systemCount))
    }
}
