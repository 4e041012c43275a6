import ModbusCore
import XCTest
@testable import KPM33B

final class ScanPlanTests: XCTestCase {
    func testLikeliestSettingsFirst() {
        let plan = ScanPlan()
        let probes = plan.probes
        XCTAssertEqual(probes.count, 15 * 247)
        XCTAssertEqual(Set(probes).count, probes.count)
        // Address 1 at every line first, the factory line first of all.
        XCTAssertEqual(probes[0], .init(line: .meterDefault, address: 1))
        XCTAssertTrue(probes[0..<15].allSatisfy { $0.address == 1 })
        // Then the factory line at every other address, before any rare combination.
        XCTAssertTrue(probes[15..<(15 + 246)].allSatisfy { $0.line == .meterDefault })
        XCTAssertEqual(probes[15 + 245].address, 247)
        // The rare formats come last.
        let firstOdd = probes.firstIndex { $0.line.parity == .odd && $0.address != 1 }!
        XCTAssertTrue(probes[15..<firstOdd].allSatisfy { $0.line.parity == .even })
    }

    func testProbeWaitComesFromTheLineNotAFixed150ms() {
        let plan = ScanPlan(latencyMarginNanos: 10_000_000)
        let fast = LineSettings(baud: 19200, parity: .even)
        let slow = LineSettings(baud: 1200, parity: .even)
        // 19200 8E1: 11 bits → 573 µs a character; t3.5 = 2.005 ms.
        XCTAssertEqual(plan.responseTimeoutNanos(fast) + plan.interByteTimeoutNanos, fast.timing.t35Nanos + 10_000_000)
        XCTAssertLessThan(plan.probeNanos(fast), 30_000_000)
        // 1200 baud: the reply alone takes 82.5 ms on the wire; the wait grows with it.
        XCTAssertGreaterThan(plan.probeNanos(slow), 150_000_000)
        XCTAssertEqual(ScanPlan.physicalMinimumNanos(LineSettings(baud: 9600, parity: .even)),
                       LineSettings(baud: 9600, parity: .even).timing.characterNanos * 17
                       + 2 * LineSettings(baud: 9600, parity: .even).timing.t35Nanos)
    }
}
