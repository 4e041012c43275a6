#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Settlement days of the meter's monthly history: 00:00 on the 1st of a month.
public protocol SettlementCalendar: Sendable {
    /// Unix seconds of 00:00 on the 1st of the month `monthsBack` months before the month that contains `time`.
    func startOfMonth(containing time: Int64, monthsBack: Int) -> Int64
}

extension SettlementCalendar {
    /// The `n`-th previous settlement day (n ≥ 1) as seen at `time`: n = 1 is the 1st of `time`'s own month.
    public func settlement(_ n: Int, before time: Int64) -> Int64 {
        startOfMonth(containing: time, monthsBack: n - 1)
    }
}

/// The board's local time zone (TZ / /etc/localtime), through the C library.
public struct LocalSettlementCalendar: SettlementCalendar {
    public init() {}
    public func startOfMonth(containing time: Int64, monthsBack: Int) -> Int64 {
        var t = time_t(time)
        var parts = tm()
        localtime_r(&t, &parts)
        Self.rewind(&parts, monthsBack: monthsBack)
        parts.tm_isdst = -1
        return Int64(mktime(&parts))
    }

    static func rewind(_ parts: inout tm, monthsBack: Int) {
        let monthIndex = Int(parts.tm_year) * 12 + Int(parts.tm_mon) - monthsBack
        parts.tm_year = Int32(monthIndex / 12)
        parts.tm_mon = Int32(monthIndex % 12)
        parts.tm_mday = 1
        parts.tm_hour = 0
        parts.tm_min = 0
        parts.tm_sec = 0
    }
}

/// UTC, for tests and boards that run in UTC.
public struct UTCSettlementCalendar: SettlementCalendar {
    public init() {}
    public func startOfMonth(containing time: Int64, monthsBack: Int) -> Int64 {
        var t = time_t(time)
        var parts = tm()
        gmtime_r(&t, &parts)
        LocalSettlementCalendar.rewind(&parts, monthsBack: monthsBack)
        return Int64(timegm(&parts))
    }
}
