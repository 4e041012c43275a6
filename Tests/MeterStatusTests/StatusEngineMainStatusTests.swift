import XCTest
@testable import MeterStatus

/// A balanced, healthy three-phase site: relay closed, 230 V, 5 A and 1.1 kW per phase, PF 0.96.
func healthyInputs() -> StatusInputs {
    StatusInputs(relayClosed: ThreePhase(all: true), controlMode: .local, forcedPower: .notForced,
                 loadThresholdKW: 0, voltages: ThreePhase(all: 230), currents: ThreePhase(all: 5),
                 activePowers: ThreePhase(all: 1100), powerFactors: ThreePhase(all: 0.96), totalPowerFactor: 0.96)
}

/// The guide's AMI codes are reasons the relay is disconnected: the main status follows the relay and what the
/// board knows about why it opened (issue 14).
final class StatusEngineMainStatusTests: XCTestCase {
    private func main(_ change: (inout StatusInputs) -> Void, loadBefore: ThreePhase<Double>? = nil) -> Int? {
        var inputs = healthyInputs()
        change(&inputs)
        return StatusEngine.mainStatus(for: inputs, loadBeforeOpening: loadBefore).entry?.code
    }

    func testRelayClosedIs1000WhateverTheLoad() {
        var engine = StatusEngine()
        let status = engine.update(healthyInputs(), now: 0)
        XCTAssertEqual(status?.amiCode, 1000)
        XCTAssertEqual(status?.subCode, 0)
        XCTAssertEqual(status?.main?.cause, "Relay Closed")
        XCTAssertEqual(status?.because, "relay closed: the meter supplies the load")
        XCTAssertEqual(status?.alerts, [])
        // Load above the threshold while the meter still supplies it is not a disconnect reason.
        XCTAssertEqual(main { $0.loadThresholdKW = 2; $0.activePowers = ThreePhase(1000, 9000, 1000) }, 1000)
        XCTAssertEqual(main { $0.controlMode = .remote }, 1000)
        // Closed coils win over a forced-off word, and over an exhausted credit.
        XCTAssertEqual(main { $0.forcedPower = .forcedOff }, 1000)
        XCTAssertEqual(main { $0.prepaidMode = true; $0.prepaidEnergyKWh = 0 }, 1000)
    }

    func testRelayOpenInRemoteModeAloneIsNotARemoteDisconnect() {
        var inputs = healthyInputs()
        inputs.relayClosed = ThreePhase(all: false)
        inputs.controlMode = .remote
        let judged = StatusEngine.mainStatus(for: inputs)
        XCTAssertNil(judged.entry)
        XCTAssertTrue(judged.relayOpen)
        XCTAssertTrue(judged.because.contains("reason unknown"), judged.because)
    }

    func testOpenedByThisBoardIsRemoteDisconnect() {
        XCTAssertEqual(main { $0.relayClosed = ThreePhase(all: false); $0.relayOpenedByBoard = true }, 1007)
        XCTAssertEqual(main {
            $0.relayClosed = ThreePhase(all: false); $0.controlMode = .remote; $0.relayOpenedByBoard = true
        }, 1007)
    }

    func testForcedPowerOffIsRemoteDisconnect() {
        XCTAssertEqual(main { $0.relayClosed = ThreePhase(all: false); $0.forcedPower = .forcedOff }, 1007)
        XCTAssertNil(main { $0.relayClosed = ThreePhase(all: false); $0.forcedPower = .forcedOn })
        XCTAssertNil(main { $0.relayClosed = ThreePhase(all: false); $0.forcedPower = .unknown })
    }

    func testOverPowerNeedsTheLoadBeforeTheOpening() {
        let open: (inout StatusInputs) -> Void = {
            $0.relayClosed = ThreePhase(all: false); $0.loadThresholdKW = 2; $0.activePowers = ThreePhase(all: 0)
        }
        XCTAssertEqual(main(open, loadBefore: ThreePhase(1000, 2500, 1000)), 1003)
        // Judged per phase like the meter: 3 × 1.9 kW is 5.7 kW in total but no phase above 2 kW.
        XCTAssertNil(main(open, loadBefore: ThreePhase(all: 1900)))
        // Exactly at the threshold is not above it; export is not load.
        XCTAssertNil(main(open, loadBefore: ThreePhase(2000, 0, 0)))
        XCTAssertNil(main(open, loadBefore: ThreePhase(-3000, 0, 0)))
        // No load seen before the opening: no guess.
        XCTAssertNil(main(open))
        // Threshold 0 means not set.
        XCTAssertNil(main({ open(&$0); $0.loadThresholdKW = 0 }, loadBefore: ThreePhase(all: 50_000)))
    }

    func testExhaustedPrepaidEnergyIsNoCreditOnlyInPrepaidModeWithTheRelayOpen() throws {
        var inputs = healthyInputs()
        inputs.relayClosed = ThreePhase(all: false)
        inputs.prepaidMode = true
        inputs.prepaidEnergyKWh = 0
        let entry = try XCTUnwrap(StatusEngine.mainStatus(for: inputs).entry)
        XCTAssertEqual(entry.code, 1001)
        XCTAssertTrue(entry.prepaidOnly)
        XCTAssertNil(main { $0.relayClosed = ThreePhase(all: false); $0.prepaidMode = false; $0.prepaidEnergyKWh = 0 })
        XCTAssertNil(main { $0.relayClosed = ThreePhase(all: false); $0.prepaidMode = true; $0.prepaidEnergyKWh = 3.2 })
    }

    func testRelayNotReadHasNoStatus() {
        XCTAssertNil(main { $0.relayClosed = nil; $0.forcedPower = .forcedOff })
    }

    func testOneOpenPhaseCountsAsOpen() {
        XCTAssertNil(main { $0.relayClosed = ThreePhase(true, false, true) })
        XCTAssertEqual(main { $0.relayClosed = ThreePhase(true, false, true); $0.relayOpenedByBoard = true }, 1007)
    }
}
