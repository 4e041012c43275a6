import Glibc
import KPM33B

/// Whether the wall clock may stamp intervals (issue 15, item 6).
///
/// Boards without a real-time clock start in 1970, or at the time fake-hwclock saved at the last shutdown, and
/// systemd-timesyncd steps the clock once it reaches a time server. So:
/// - never while the clock is earlier than the firmware's build date;
/// - on a machine that runs systemd-timesyncd (booted with systemd, timesyncd enabled), only once it has reported
///   synchronisation
///   (`/run/systemd/timesync/synchronized` exists; it is created at the first sync after boot);
/// - a machine without timesyncd (development, tests) counts as synchronised.
/// Pure apart from the two file checks, which are injectable.
public struct TimeTrust: Sendable {
    /// Unix seconds: the clock is wrong while it is earlier than this.
    public var buildDate: Int64
    public var synchronizedFlag: String
    /// Whether systemd-timesyncd is installed on this machine.
    public var hasTimesyncd: @Sendable () -> Bool
    public var fileExists: @Sendable (String) -> Bool

    public static let defaultSynchronizedFlag = "/run/systemd/timesync/synchronized"
    /// systemd runs this machine (booted with it as PID 1).
    public static let systemdBooted = "/run/systemd/system"
    /// Debian enables systemd-timesyncd through this link (`systemctl enable`); a masked or removed timesyncd
    /// (chrony, ntpd) has none.
    public static let timesyncdEnabled = "/etc/systemd/system/sysinit.target.wants/systemd-timesyncd.service"

    public init(buildDate: Int64, synchronizedFlag: String = TimeTrust.defaultSynchronizedFlag,
                hasTimesyncd: (@Sendable () -> Bool)? = nil,
                fileExists: @escaping @Sendable (String) -> Bool = { path in
                    // withCString: no copy of the path per check (issue 18: checked every poll cycle).
                    path.withCString { access($0, F_OK) == 0 }
                }) {
        self.buildDate = buildDate
        self.synchronizedFlag = synchronizedFlag
        self.fileExists = fileExists
        self.hasTimesyncd = hasTimesyncd
            ?? { fileExists(TimeTrust.systemdBooted) && fileExists(TimeTrust.timesyncdEnabled) }
    }

    public enum Verdict: Equatable, Sendable {
        case trusted
        case beforeBuildDate
        case notSynchronized

        public var reason: String {
            switch self {
            case .trusted: return "the clock is trusted"
            case .beforeBuildDate: return "the clock is earlier than the firmware's build date (no RTC, no time sync yet)"
            case .notSynchronized: return "systemd-timesyncd has not synchronised the clock yet"
            }
        }
    }

    public func verdict(now: Int64) -> Verdict {
        if now < buildDate { return .beforeBuildDate }
        if hasTimesyncd() && !fileExists(synchronizedFlag) { return .notSynchronized }
        return .trusted
    }

    /// The meter's clock as Unix seconds in the board's time zone (the meter keeps local time), nil when it does
    /// not read as a date.
    public static func meterTime(_ clock: MeterClock) -> Int64? {
        let year = clock.year < 100 ? 2000 + clock.year : clock.year
        guard (2000...2099).contains(year), (1...12).contains(clock.month), (1...31).contains(clock.day),
              (0...23).contains(clock.hour), (0...59).contains(clock.minute), (0...59).contains(clock.second) else {
            return nil
        }
        var parts = tm()
        parts.tm_year = Int32(year - 1900)
        parts.tm_mon = Int32(clock.month - 1)
        parts.tm_mday = Int32(clock.day)
        parts.tm_hour = Int32(clock.hour)
        parts.tm_min = Int32(clock.minute)
        parts.tm_sec = Int32(clock.second)
        parts.tm_isdst = -1
        return Int64(mktime(&parts))
    }

    /// A sanity check only (the meter's clock drifts and may never have been set): a line for the log when the
    /// meter's clock and the board's differ by more than `tolerance` seconds, else nil.
    public static func meterClockWarning(_ clock: MeterClock, readAt: Int64, tolerance: Int64 = 600) -> String? {
        guard let meter = meterTime(clock) else {
            return "history: the meter's clock does not read as a date (\(clock.text)); the board's clock is used"
        }
        let difference = readAt - meter
        guard abs(difference) > tolerance else { return nil }
        return "history: the meter's clock (\(clock.text)) differs from the board's by \(difference) s; "
            + "intervals use the board's clock (check the board's time sync or set the meter's clock)"
    }
}
