import XCTest
@testable import MeterStatus

/// Measurement alerts with the default limits: 230 V ± 10 % (raise above 253 V / below 207 V, clear at 248.4 V /
/// 211.6 V), 10 s minimum duration.
final class StatusEngineAlertTests: XCTestCase {
    private func inputs(_ change: (inout StatusInputs) -> Void) -> StatusInputs {
        var inputs = healthyInputs()
        change(&inputs)
        return inputs
    }

    private func alert(_ status: OperatingStatus?, _ code: Int) -> StatusAlert? {
        status?.alerts.first { $0.amiCode == code }
    }

    // MARK: - Voltage

    func testOverVoltageIsRaisedOnlyAfterTheMinimumDurationAndClearedAfterIt() throws {
        var engine = StatusEngine()
        let high = inputs { $0.voltages = ThreePhase(260, 246, 246) }
        XCTAssertNil(alert(engine.update(high, now: 100), 1011))
        XCTAssertNil(alert(engine.update(high, now: 105), 1011))
        XCTAssertNil(alert(engine.update(high, now: 109.9), 1011))
        let raised = try XCTUnwrap(alert(engine.update(high, now: 110), 1011))
        XCTAssertEqual(raised.subCode, 11)
        XCTAssertEqual(raised.cause, "Over Voltage")
        XCTAssertTrue(raised.action.contains("report to utility"))
        XCTAssertEqual(raised.phases, [.a])
        XCTAssertEqual(raised.since, 110)
        XCTAssertTrue(raised.detail.contains("phase A 260.0 V"), raised.detail)
        XCTAssertTrue(raised.detail.contains("253.0"), raised.detail)

        let normal = healthyInputs()
        // Gone, but not for long enough yet: still reported, still naming phase A.
        let clearing = try XCTUnwrap(alert(engine.update(normal, now: 111), 1011))
        XCTAssertEqual(clearing.phases, [.a])
        XCTAssertEqual(clearing.since, 110)
        XCTAssertNotNil(alert(engine.update(normal, now: 120.9), 1011))
        XCTAssertNil(alert(engine.update(normal, now: 121), 1011))
        XCTAssertFalse(engine.isRaised(.overVoltage))
        // The main status is unaffected by alerts.
        XCTAssertEqual(engine.update(normal, now: 122)?.amiCode, 1000)
    }

    func testUnderVoltage() throws {
        var engine = StatusEngine()
        let low = inputs { $0.voltages = ThreePhase(all: 200) }
        XCTAssertNil(alert(engine.update(low, now: 0), 1012))
        let raised = try XCTUnwrap(alert(engine.update(low, now: 10), 1012))
        XCTAssertEqual(raised.cause, "Under Voltage")
        XCTAssertEqual(raised.phases, [.a, .b, .c])
        XCTAssertNil(alert(engine.update(low, now: 10), 1011))
        // 207.5 V is above the raise limit but inside the hysteresis band: stays raised however long it lasts.
        let recovering = inputs { $0.voltages = ThreePhase(all: 207.5) }
        for t in stride(from: 11.0, through: 60, by: 1) {
            XCTAssertNotNil(alert(engine.update(recovering, now: t), 1012), "t=\(t)")
        }
    }

    func testShortExcursionsNeverRaise() {
        var engine = StatusEngine()
        let high = inputs { $0.voltages = ThreePhase(all: 260) }
        var t = 0.0
        for _ in 0..<5 {
            // 9 s high, 1 s normal, repeated: never 10 s in a row.
            for _ in 0..<9 {
                XCTAssertNil(alert(engine.update(high, now: t), 1011), "t=\(t)")
                t += 1
            }
            XCTAssertNil(alert(engine.update(healthyInputs(), now: t), 1011), "t=\(t)")
            t += 1
        }
    }

    func testVoltageFlappingAroundTheLimitDoesNotFlapTheAlert() {
        var engine = StatusEngine()
        let v = { (volts: Double) in self.inputs { $0.voltages = ThreePhase(all: volts) } }
        var states: [Bool] = []
        var t = 0.0
        func feed(_ volts: Double) {
            states.append(alert(engine.update(v(volts), now: t), 1011) != nil)
            t += 1
        }
        // Hovering across the raise limit: each dip restarts the raise timer, so nothing is raised.
        for i in 0..<40 { feed(i % 2 == 0 ? 254 : 252) }
        XCTAssertFalse(states.contains(true))
        // Held above the limit: raised once.
        for _ in 0..<11 { feed(254) }
        // Hovering between the raise and the clear limit (hysteresis band): stays raised.
        for i in 0..<40 { feed(i % 2 == 0 ? 254 : 249) }
        // Dipping below the clear limit, but never for 10 s: stays raised.
        for i in 0..<40 { feed(i % 5 == 4 ? 254 : 240) }
        // Normal for good: cleared once.
        for _ in 0..<11 { feed(230) }

        let transitions = zip(states, states.dropFirst()).filter { $0 != $1 }.count
        XCTAssertEqual(transitions, 2, "raised once and cleared once")
        XCTAssertEqual(states.last, false)
        XCTAssertEqual(states.firstIndex(of: true), 50, "raised after 10 s at 254 V (samples 40…50)")
    }

    func testHysteresisAloneWithoutMinimumDuration() {
        var config = StatusEngineConfig()
        config.minimumDuration = 0
        var engine = StatusEngine(config: config)
        let v = { (volts: Double) in self.inputs { $0.voltages = ThreePhase(all: volts) } }
        XCTAssertNil(alert(engine.update(v(253), now: 0), 1011), "at the limit is not above it")
        XCTAssertNotNil(alert(engine.update(v(253.5), now: 1), 1011), "no duration: raised at once")
        XCTAssertNotNil(alert(engine.update(v(249), now: 2), 1011), "inside the band: stays")
        XCTAssertNotNil(alert(engine.update(v(248.5), now: 3), 1011), "still inside the band")
        XCTAssertNil(alert(engine.update(v(248.3), now: 4), 1011), "past the band: cleared")
        XCTAssertNil(alert(engine.update(v(252), now: 5), 1011), "inside the band again: not raised again")
    }

    // MARK: - Current reverse

    func testPhasesDisagreeingInSignAtComparableLoadIsAReversal() throws {
        var engine = StatusEngine()
        let reversed = inputs { $0.activePowers = ThreePhase(1100, -1000, 1100) }
        XCTAssertNil(alert(engine.update(reversed, now: 0), 1013))
        let raised = try XCTUnwrap(alert(engine.update(reversed, now: 10), 1013))
        XCTAssertEqual(raised.cause, "Current Reverse")
        XCTAssertEqual(raised.display, "Current Reverse (possible tamper/wiring issue)")
        XCTAssertTrue(raised.action.contains("polarity"))
        XCTAssertEqual(raised.phases, [.b])
    }

    func testNoiseAtNoLoadIsNotAReversal() {
        var engine = StatusEngine()
        let noise = inputs { $0.activePowers = ThreePhase(-8, -15, 60) }
        for t in stride(from: 0.0, through: 30, by: 1) {
            XCTAssertNil(alert(engine.update(noise, now: t), 1013))
        }
    }

    func testExportOnAllPhasesOrUnequalExportIsNormal() {
        var engine = StatusEngine()
        for t in stride(from: 0.0, through: 30, by: 1) {
            XCTAssertNil(alert(engine.update(inputs { $0.activePowers = ThreePhase(-1500, -1400, -1600) }, now: t), 1013))
        }
        // Single-phase PV on B exporting 2.5 kW while A and C draw 1.1 kW: not a comparable amount.
        for t in stride(from: 31.0, through: 60, by: 1) {
            XCTAssertNil(alert(engine.update(inputs { $0.activePowers = ThreePhase(1100, -2500, 1100) }, now: t), 1013))
        }
    }

    func testExportOnAnImportOnlyPhase() {
        var config = StatusEngineConfig()
        config.importOnlyPhases = [.a]
        var engine = StatusEngine(config: config)
        let exportA = inputs { $0.activePowers = ThreePhase(-300, -2500, -1100) }
        _ = engine.update(exportA, now: 0)
        let raised = alert(engine.update(exportA, now: 10), 1013)
        XCTAssertEqual(raised?.phases, [.a])
        XCTAssertTrue(raised?.detail.contains("import only") ?? false, raised?.detail ?? "")
    }

    // MARK: - Imbalance

    func testCurrentImbalance() throws {
        var engine = StatusEngine()
        // (10 − 4) / 10 = 60 % > 30 %.
        let imbalanced = inputs { $0.currents = ThreePhase(10, 10, 4) }
        XCTAssertNil(alert(engine.update(imbalanced, now: 0), 1016))
        let raised = try XCTUnwrap(alert(engine.update(imbalanced, now: 10), 1016))
        XCTAssertEqual(raised.cause, "Current Imbalance")
        XCTAssertTrue(raised.detail.contains("60.0 %"), raised.detail)

        var balanced = StatusEngine()
        // (10 − 8) / 10 = 20 %.
        let mild = inputs { $0.currents = ThreePhase(10, 10, 8) }
        _ = balanced.update(mild, now: 0)
        XCTAssertNil(alert(balanced.update(mild, now: 20), 1016))
    }

    func testCurrentImbalanceIsNotJudgedAtLightLoad() {
        var engine = StatusEngine()
        let light = inputs { $0.currents = ThreePhase(0.8, 0.1, 0) }
        for t in stride(from: 0.0, through: 30, by: 1) {
            XCTAssertNil(alert(engine.update(light, now: t), 1016))
        }
    }

    func testVoltageImbalance() throws {
        var engine = StatusEngine()
        // Mean 230 V, phase A and C 10 V off: 4.3 % > 3 %, while every phase is within ±10 %.
        let imbalanced = inputs { $0.voltages = ThreePhase(240, 230, 220) }
        XCTAssertNil(alert(engine.update(imbalanced, now: 0), 1021))
        let status = engine.update(imbalanced, now: 10)
        let raised = try XCTUnwrap(alert(status, 1021))
        XCTAssertEqual(raised.cause, "Voltage Imbalance")
        XCTAssertEqual(raised.action, "Investigate feeder phase imbalance.")
        XCTAssertEqual(raised.phases, [.a, .c])
        XCTAssertNil(alert(status, 1011))
        XCTAssertNil(alert(status, 1012))

        var balanced = StatusEngine()
        let slight = inputs { $0.voltages = ThreePhase(232, 230, 228) }
        _ = balanced.update(slight, now: 0)
        XCTAssertNil(alert(balanced.update(slight, now: 20), 1021))
    }

    // MARK: - Power factor

    func testLowPowerFactorUnderLoad() throws {
        var engine = StatusEngine()
        let poor = inputs {
            $0.totalPowerFactor = 0.6
            $0.powerFactors = ThreePhase(0.3, 0.95, 0.95)
        }
        XCTAssertNil(alert(engine.update(poor, now: 0), 1023))
        let raised = try XCTUnwrap(alert(engine.update(poor, now: 10), 1023))
        XCTAssertEqual(raised.cause, "Low Power Factor")
        XCTAssertTrue(raised.action.contains("capacitors"))
        XCTAssertEqual(raised.phases, [.a])

        // A leading PF is judged by magnitude too.
        var leading = StatusEngine()
        let capacitive = inputs { $0.totalPowerFactor = -0.7 }
        _ = leading.update(capacitive, now: 0)
        XCTAssertNotNil(alert(leading.update(capacitive, now: 10), 1023))
        var good = StatusEngine()
        let fine = inputs { $0.totalPowerFactor = -0.95 }
        _ = good.update(fine, now: 0)
        XCTAssertNil(alert(good.update(fine, now: 10), 1023))
    }

    func testNoLowPowerFactorAlertAtNoLoad() {
        var engine = StatusEngine()
        // 3 × 230 V × 0.1 A = 69 VA: the PF reading is noise.
        let idle = inputs {
            $0.currents = ThreePhase(all: 0.1)
            $0.activePowers = ThreePhase(all: 2)
            $0.totalPowerFactor = 0.1
            $0.powerFactors = ThreePhase(all: 0.1)
        }
        for t in stride(from: 0.0, through: 30, by: 1) {
            XCTAssertNil(alert(engine.update(idle, now: t), 1023))
        }
    }

    // MARK: - Several alerts, offline, unknown inputs

    func testSeveralAlertsAreListedInCodeOrder() {
        var engine = StatusEngine()
        let bad = inputs {
            $0.voltages = ThreePhase(all: 260)
            $0.activePowers = ThreePhase(1100, -1000, 1100)
            $0.totalPowerFactor = 0.5
        }
        _ = engine.update(bad, now: 0)
        let status = engine.update(bad, now: 10)
        XCTAssertEqual(status?.alerts.map(\.amiCode), [1011, 1013, 1023])
        XCTAssertEqual(status?.alerts.map(\.subCode), [11, 13, 23])
        XCTAssertEqual(status?.amiCode, 1000)
    }

    func testOfflineGivesNoStatusAndForgetsAlerts() {
        var engine = StatusEngine()
        let high = inputs { $0.voltages = ThreePhase(all: 260) }
        _ = engine.update(high, now: 0)
        XCTAssertNotNil(alert(engine.update(high, now: 10), 1011))

        XCTAssertNil(engine.update(nil, now: 11))
        XCTAssertFalse(engine.isRaised(.overVoltage))

        // Back online with the same reading: the alert must hold for the full duration again.
        XCTAssertNil(alert(engine.update(high, now: 12), 1011))
        XCTAssertNil(alert(engine.update(high, now: 21), 1011))
        XCTAssertNotNil(alert(engine.update(high, now: 22), 1011))
    }

    func testOfflineAlsoRestartsAPendingTimer() {
        var engine = StatusEngine()
        let high = inputs { $0.voltages = ThreePhase(all: 260) }
        _ = engine.update(high, now: 0)
        _ = engine.update(high, now: 8)
        XCTAssertNil(engine.update(nil, now: 9))
        XCTAssertNil(alert(engine.update(high, now: 10), 1011), "8 s before + 1 s after must not add up")
        XCTAssertNil(alert(engine.update(high, now: 19), 1011))
        XCTAssertNotNil(alert(engine.update(high, now: 20), 1011))
    }

    func testMissingMeasurementsDropTheirAlerts() {
        var engine = StatusEngine()
        let high = inputs { $0.voltages = ThreePhase(all: 260) }
        _ = engine.update(high, now: 0)
        XCTAssertNotNil(alert(engine.update(high, now: 10), 1011))
        let unread = inputs { $0.voltages = nil }
        let status = engine.update(unread, now: 11)
        XCTAssertNil(alert(status, 1011), "a voltage we no longer read must not be reported as high")
        XCTAssertEqual(status?.amiCode, 1000)
        let garbage = inputs { $0.voltages = ThreePhase(.nan, 260, 260) }
        _ = engine.update(garbage, now: 12)
        XCTAssertNil(alert(engine.update(garbage, now: 30), 1011))
    }

    func testChangingTheMinimumDurationAppliesToRunningTimers() {
        var engine = StatusEngine()
        let high = inputs { $0.voltages = ThreePhase(all: 260) }
        _ = engine.update(high, now: 0)
        engine.config.minimumDuration = 3
        XCTAssertNil(alert(engine.update(high, now: 2), 1011))
        XCTAssertNotNil(alert(engine.update(high, now: 3), 1011))
    }
}
