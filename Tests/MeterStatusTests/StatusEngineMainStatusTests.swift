import XCTest
@testable import MeterStatus

/// A balanced, healthy three-phase site: relay closed, 230 V, 5 A and 1.1 kW per phase, PF 0.96.
func healthyInputs() -> StatusInputs {
    StatusInputs(relayClosed: ThreePhase(all: true), controlMode: .local, forcedPower: .notForced,
                 loadThresholdKW: 0, voltages: ThreePhase(all: 230), currents: ThreePhase(all: 5),
                 activePowers: ThreePhase(all: 1100), powerFactors: ThreePhase(all: 0.96), totalPowerFactor: 0.96)
}

final class StatusEngineMainStatusTests: XCTestCase {
    private func main(_ change: (inout StatusInputs) -> Void) -> Int? {
        var inputs = healthyInputs()
        change(&inputs)
        return StatusEngine.mainStatus(for: inputs)?.code
    }

    func testRelayClosedAndNothingAbnormalIs1000() {
        var engine = StatusEngine()
        let status = engine.update(healthyInputs(), now: 0)
        XCTAssertEqual(status?.amiCode, 1000)
        XCTAssertEqual(status?.subCode, 0)
        XCTAssertEqual(status?.main?.cause, "Relay Closed")
        XCTAssertEqual(status?.main?.prepaidOnly, false)
        XCTAssertEqual(status?.alerts, [])
    }

    func testRelayOpenInRemoteModeIsRemoteDisconnect() throws {
        let entry = try XCTUnwrap(StatusEngine.mainStatus(for: {
            var inputs = healthyInputs()
            inputs.relayClosed = ThreePhase(all: false)
            inputs.controlMode = .remote
            return inputs
        }()))
        XCTAssertEqual(entry.code, 1007)
        XCTAssertEqual(entry.subCode, 7)
        XCTAssertEqual(entry.cause, "Remote Disconnect")
        XCTAssertTrue(entry.action.contains("HES"))
        // One phase open is enough: the load is not fully supplied.
        XCTAssertEqual(main { $0.relayClosed = ThreePhase(true, false, true); $0.controlMode = .remote }, 1007)
        // Remote mode with the relay closed is normal.
        XCTAssertEqual(main { $0.controlMode = .remote }, 1000)
    }

    func testForcedPowerOffIsRemoteDisconnect() {
        XCTAssertEqual(main { $0.relayClosed = ThreePhase(all: false); $0.forcedPower = .forcedOff }, 1007)
        XCTAssertEqual(main { $0.relayClosed = nil; $0.forcedPower = .forcedOff }, 1007)
        // The coils are what supply the load: closed coils win over a forced-off word.
        XCTAssertEqual(main { $0.forcedPower = .forcedOff }, 1000)
    }

    func testRelayOpenWithoutAKnownReasonHasNoMainStatus() {
        XCTAssertNil(main { $0.relayClosed = ThreePhase(all: false); $0.controlMode = .local })
        XCTAssertNil(main { $0.relayClosed = ThreePhase(false, true, true); $0.controlMode = .local })
        XCTAssertNil(main { $0.relayClosed = ThreePhase(all: false); $0.controlMode = .unknown })
        XCTAssertNil(main { $0.relayClosed = ThreePhase(all: false); $0.forcedPower = .forcedOn })
        XCTAssertNil(main { $0.relayClosed = ThreePhase(all: false); $0.forcedPower = .unknown })
        // Relay not read: we cannot claim "Relay Closed" either.
        XCTAssertNil(main { $0.relayClosed = nil; $0.controlMode = .remote })
        var engine = StatusEngine()
        var inputs = healthyInputs()
        inputs.relayClosed = ThreePhase(all: false)
        let status = engine.update(inputs, now: 0)
        XCTAssertNotNil(status, "the meter is online, so there is a status object")
        XCTAssertNil(status?.main)
        XCTAssertNil(status?.amiCode)
    }

    func testLoadAboveThresholdIsOverPower() {
        XCTAssertEqual(main { $0.loadThresholdKW = 2; $0.activePowers = ThreePhase(1000, 2500, 1000) }, 1003)
        XCTAssertEqual(StatusCodes.ami(1003)?.cause, "Over Power")
        // Judged per phase like the meter: 3 × 1.9 kW is 5.7 kW in total but no phase above 2 kW.
        XCTAssertEqual(main { $0.loadThresholdKW = 2; $0.activePowers = ThreePhase(all: 1900) }, 1000)
        // Exactly at the threshold is not above it.
        XCTAssertEqual(main { $0.loadThresholdKW = 2; $0.activePowers = ThreePhase(2000, 0, 0) }, 1000)
        // Export is not load.
        XCTAssertEqual(main { $0.loadThresholdKW = 2; $0.activePowers = ThreePhase(-3000, 0, 0) }, 1000)
    }

    func testThresholdZeroMeansNotSet() {
        XCTAssertEqual(main { $0.loadThresholdKW = 0; $0.activePowers = ThreePhase(all: 50_000) }, 1000)
    }

    func testOverPowerNeedsTheRelayClosed() {
        XCTAssertNil(main {
            $0.relayClosed = ThreePhase(all: false)
            $0.loadThresholdKW = 1
            $0.activePowers = ThreePhase(all: 5000)
        })
    }

    func testExhaustedPrepaidEnergyIsNoCreditOnlyInPrepaidMode() throws {
        var inputs = healthyInputs()
        inputs.prepaidMode = true
        inputs.prepaidEnergyKWh = 0
        let entry = try XCTUnwrap(StatusEngine.mainStatus(for: inputs))
        XCTAssertEqual(entry.code, 1001)
        XCTAssertEqual(entry.cause, "No Credit")
        XCTAssertTrue(entry.prepaidOnly)

        XCTAssertEqual(main { $0.prepaidMode = true; $0.prepaidEnergyKWh = -1.5 }, 1001)
        XCTAssertEqual(main { $0.prepaidMode = true; $0.prepaidEnergyKWh = 3.2 }, 1000)
        XCTAssertEqual(main { $0.prepaidMode = true; $0.prepaidEnergyKWh = nil }, 1000)
        XCTAssertEqual(main { $0.prepaidMode = false; $0.prepaidEnergyKWh = 0 }, 1000)
        // The meter opened its relay locally because the credit ran out: a known reason.
        XCTAssertEqual(main {
            $0.relayClosed = ThreePhase(all: false)
            $0.prepaidMode = true
            $0.prepaidEnergyKWh = 0
        }, 1001)
    }

    func testPriority() {
        // 1007 > 1001
        XCTAssertEqual(main {
            $0.relayClosed = ThreePhase(all: false)
            $0.controlMode = .remote
            $0.prepaidMode = true
            $0.prepaidEnergyKWh = 0
        }, 1007)
        // 1001 > 1003
        XCTAssertEqual(main {
            $0.prepaidMode = true
            $0.prepaidEnergyKWh = 0
            $0.loadThresholdKW = 1
            $0.activePowers = ThreePhase(all: 5000)
        }, 1001)
    }
}
