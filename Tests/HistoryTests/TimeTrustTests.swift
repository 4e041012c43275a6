import XCTest
import KPM33B
@testable import History

final class TimeTrustTests: XCTestCase {
    let build: Int64 = 1_795_996_800

    func testNeverBeforeTheBuildDate() {
        let trust = TimeTrust(buildDate: build, hasTimesyncd: { false }, fileExists: { _ in true })
        XCTAssertEqual(trust.verdict(now: 0), .beforeBuildDate)  // a board without RTC in 1970
        XCTAssertEqual(trust.verdict(now: build - 1), .beforeBuildDate)
        XCTAssertEqual(trust.verdict(now: build), .trusted)
    }

    func testWithTimesyncdOnlyOnceSynchronised() {
        let dir = "/tmp/timetrust-\(getpid())"
        mkdir(dir, 0o700)
        defer { _ = system("rm -rf '\(dir)'") }
        let flag = dir + "/synchronized"
        let trust = TimeTrust(buildDate: build, synchronizedFlag: flag, hasTimesyncd: { true })
        XCTAssertEqual(trust.verdict(now: build + 100), .notSynchronized)
        XCTAssertNotNil(fopen(flag, "w").map { fclose($0) })
        XCTAssertEqual(trust.verdict(now: build + 100), .trusted)
    }

    func testWithoutTimesyncdCountsAsSynchronised() {
        let trust = TimeTrust(buildDate: build, synchronizedFlag: "/nonexistent/flag", hasTimesyncd: { false })
        XCTAssertEqual(trust.verdict(now: build + 1), .trusted)
    }

    func testTimesyncdDetectionNeedsSystemdAndTheEnabledUnit() {
        let only = { (present: Set<String>) in
            TimeTrust(buildDate: 0, synchronizedFlag: "/flag", fileExists: { present.contains($0) })
        }
        XCTAssertEqual(only([]).verdict(now: 1), .trusted)
        XCTAssertEqual(only([TimeTrust.systemdBooted]).verdict(now: 1), .trusted)
        XCTAssertEqual(only([TimeTrust.systemdBooted, TimeTrust.timesyncdEnabled]).verdict(now: 1), .notSynchronized)
        XCTAssertEqual(only([TimeTrust.systemdBooted, TimeTrust.timesyncdEnabled, "/flag"]).verdict(now: 1), .trusted)
    }

    func testMeterClockIsOnlyASanityCheck() {
        setenv("TZ", "UTC", 1)
        tzset()
        let clock = MeterClock(year: 26, month: 11, day: 30, hour: 12, minute: 0, second: 0)
        let t = TimeTrust.meterTime(clock)!
        XCTAssertNil(TimeTrust.meterClockWarning(clock, readAt: t + 30))
        XCTAssertNotNil(TimeTrust.meterClockWarning(clock, readAt: t + 3600))
        XCTAssertNotNil(TimeTrust.meterClockWarning(MeterClock(year: 0xFF, month: 0, day: 0, hour: 0, minute: 0, second: 0),
                                                    readAt: t))
    }
}
