import XCTest
@testable import MeterStatus

/// The engine against recorded input sequences (one sample per second, as the poll loop feeds it), each asserting
/// the main code, its `because`, and the 1013 alert (issue 14).
final class StatusEngineRecordedTests: XCTestCase {
    /// Runs `samples` (at t = 0, 1, 2 … s) through one engine; returns every status.
    private func replay(_ samples: [StatusInputs], config: StatusEngineConfig = StatusEngineConfig()) -> [OperatingStatus] {
        var engine = StatusEngine(config: config)
        return samples.enumerated().compactMap { engine.update($0.element, now: Double($0.offset)) }
    }

    private func sample(relay: Bool = true, powers: ThreePhase<Double>, _ change: (inout StatusInputs) -> Void = { _ in })
        -> StatusInputs {
        var inputs = healthyInputs()
        inputs.relayClosed = ThreePhase(all: relay)
        inputs.activePowers = powers
        inputs.currents = ThreePhase(abs(powers.a) / 230, abs(powers.b) / 230, abs(powers.c) / 230)
        change(&inputs)
        return inputs
    }

    /// A sunny day at a three-phase PV site: import in the morning, export on all phases at midday, with the
    /// noise of a real meter. No alert, always 1000.
    func testPVExportDayRaisesNothing() {
        var samples: [StatusInputs] = []
        for t in 0..<600 {
            let sun = Double(t) / 600 * 4000 // 0 → 4 kW of PV per phase over the recording
            let wobble = Double((t * 37) % 11) * 20 - 100
            samples.append(sample(powers: ThreePhase(600 - sun + wobble, 450 - sun - wobble, 800 - sun + wobble / 2)))
        }
        let statuses = replay(samples)
        XCTAssertEqual(statuses.count, 600)
        for (t, status) in statuses.enumerated() {
            XCTAssertEqual(status.amiCode, 1000, "t=\(t)")
            XCTAssertEqual(status.because, "relay closed: the meter supplies the load")
            XCTAssertFalse(status.alerts.contains { $0.amiCode == 1013 }, "t=\(t): \(status.alerts)")
        }
    }

    /// Phase B's CT is mounted the wrong way round: B shows the house's load as export while A and C import.
    func testSwappedCTRaises1013AfterTenSeconds() throws {
        let samples = (0..<15).map { t in sample(powers: ThreePhase(1200 + Double(t), -1150, 1050)) }
        let statuses = replay(samples)
        for t in 0..<10 { XCTAssertFalse(statuses[t].alerts.contains { $0.amiCode == 1013 }, "t=\(t)") }
        let alert = try XCTUnwrap(statuses[10].alerts.first { $0.amiCode == 1013 })
        XCTAssertEqual(alert.phases, [.b])
        XCTAssertEqual(alert.since, 10)
        XCTAssertTrue(alert.detail.contains("disagree in sign"), alert.detail)
        XCTAssertEqual(statuses[14].amiCode, 1000)
    }

    /// The meter in remote control mode trips on over power: phase B drew 6.2 kW against a 5 kW threshold, then
    /// the relay opens. That is 1003 (the guide's disconnect reason), not 1007.
    func testOverPowerTripInRemoteModeIs1003() throws {
        var samples: [StatusInputs] = []
        for _ in 0..<30 {
            samples.append(sample(powers: ThreePhase(2000, 6200, 1500)) { $0.controlMode = .remote; $0.loadThresholdKW = 5 })
        }
        for _ in 0..<20 {
            samples.append(sample(relay: false, powers: ThreePhase(all: 0)) { $0.controlMode = .remote; $0.loadThresholdKW = 5 })
        }
        let statuses = replay(samples)
        for t in 0..<30 { XCTAssertEqual(statuses[t].amiCode, 1000, "the meter still supplies the load at t=\(t)") }
        for t in 30..<50 {
            XCTAssertEqual(statuses[t].amiCode, 1003, "t=\(t)")
            XCTAssertEqual(statuses[t].because, "relay open (phase A,B,C); before the opening phase B drew 6200 W, "
                + "above the meter's load threshold 5.0 kW (0x0026)")
        }
    }

    /// relay_set off from the API (local control mode), then on again, then an opening the board did not command.
    func testRelayOpenedByRelaySetIs1007AndOnlyUntilClosed() {
        var samples: [StatusInputs] = []
        for _ in 0..<5 { samples.append(sample(powers: ThreePhase(all: 500))) }
        for _ in 0..<5 { samples.append(sample(relay: false, powers: ThreePhase(all: 0)) { $0.relayOpenedByBoard = true }) }
        for _ in 0..<5 { samples.append(sample(powers: ThreePhase(all: 500))) }
        for _ in 0..<5 { samples.append(sample(relay: false, powers: ThreePhase(all: 0))) }
        let statuses = replay(samples)
        for t in 5..<10 {
            XCTAssertEqual(statuses[t].amiCode, 1007)
            XCTAssertEqual(statuses[t].because, "relay open (phase A,B,C) after this board's relay_set command opened it")
            XCTAssertEqual(statuses[t].action, StatusCodes.ami(1007)?.action)
        }
        for t in 10..<15 { XCTAssertEqual(statuses[t].amiCode, 1000) }
        for t in 15..<20 {
            XCTAssertNil(statuses[t].main, "t=\(t)")
            XCTAssertTrue(statuses[t].because.contains("reason unknown"), statuses[t].because)
            XCTAssertEqual(statuses[t].action, OperatingStatus.unknownOpenAction)
        }
    }

    /// The back office forces the supply off (0x001B), in remote mode; before that, the relay opened in remote mode
    /// without a forced-off word, which says nothing about why.
    func testForcedPowerOffIs1007AndRemoteModeAloneIsNot() {
        var samples: [StatusInputs] = []
        for _ in 0..<5 {
            samples.append(sample(relay: false, powers: ThreePhase(all: 0)) { $0.controlMode = .remote })
        }
        for _ in 0..<5 {
            samples.append(sample(relay: false, powers: ThreePhase(all: 0)) {
                $0.controlMode = .remote; $0.forcedPower = .forcedOff
            })
        }
        let statuses = replay(samples)
        for t in 0..<5 {
            XCTAssertNil(statuses[t].main, "t=\(t)")
            XCTAssertEqual(statuses[t].because, "relay open (phase A,B,C), reason unknown: not opened by this board, "
                + "no forced power-off, load before the opening not seen")
        }
        for t in 5..<10 {
            XCTAssertEqual(statuses[t].amiCode, 1007)
            XCTAssertEqual(statuses[t].because, "relay open (phase A,B,C); the meter reports remote forced power-off (0x001B)")
        }
    }
}
