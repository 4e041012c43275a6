import XCTest
@testable import MeterStatus

/// Issue 12: whatever the meter sends, the status engine never traps. A phase voltage of 1e20 V used to stop the
/// service: the alert text converted 1e21 to an Int.
final class ExtremeValueTests: XCTestCase {
    private func healthy(_ change: (inout StatusInputs) -> Void) -> StatusInputs {
        var inputs = healthyInputs()
        change(&inputs)
        return inputs
    }

    /// Float32 patterns of every sign × exponent × mantissa extremes (as the KPM33B sweep uses), widened to Double
    /// as the service does, plus Double-only extremes a caller could pass.
    static let values: [Double] = {
        var out: [Double] = []
        let mantissas: [UInt32] = [0, 1, 2, 0x3F_FFFF, 0x40_0000, 0x40_0001, 0x7F_FFFE, 0x7F_FFFF, 0x2A_AAAA]
        for sign: UInt32 in [0, 1] {
            for exponent: UInt32 in 0...255 {
                for m in mantissas { out.append(Double(Float(bitPattern: sign << 31 | exponent << 23 | m))) }
            }
        }
        return out + [.greatestFiniteMagnitude, -.greatestFiniteMagnitude, 9.3e18, -9.3e18, 4.6e18, 4.6e17,
                      .leastNonzeroMagnitude, .nan, .signalingNaN, .infinity, -.infinity]
    }()

    func testHugeVoltageDoesNotTrap() {
        // The reproduction: the service died here within a second of reading the register.
        var engine = StatusEngine()
        let status = engine.update(healthy { $0.voltages = ThreePhase(1e20, 230, 230) }, now: 0)
        XCTAssertNotNil(status)
        let judged = StatusEngine.judge(.overVoltage, inputs: healthy { $0.voltages = ThreePhase(3e38, 230, 230) },
                                        config: StatusEngineConfig())
        XCTAssertEqual(judged.sample, .beyond)
        XCTAssertTrue(judged.detail.contains("phase A 3e+38 V"), judged.detail)
    }

    func testFixedIsTotal() {
        XCTAssertEqual(fixed(262.43, 1), "262.4")
        XCTAssertEqual(fixed(-0.04, 1), "0.0")
        XCTAssertEqual(fixed(1e20, 1), "1e+20")
        XCTAssertEqual(fixed(-3e38, 0), "-3e+38")
        XCTAssertEqual(fixed(.nan, 2), "nan")
        for v in Self.values {
            for digits in 0...3 { XCTAssertFalse(fixed(v, digits).isEmpty) }
        }
    }

    /// Every value in every measurement input, alone and on all phases, through `update` and every judgement.
    func testEveryValueInEveryInputNeverTraps() {
        let config = StatusEngineConfig()
        var engine = StatusEngine(config: config)
        var now = 0.0
        func feed(_ inputs: StatusInputs) {
            now += 1
            let status = engine.update(inputs, now: now)
            XCTAssertNotNil(status)
            for condition in StatusEngine.Condition.allCases {
                _ = StatusEngine.judge(condition, inputs: inputs, config: config).detail
            }
            _ = StatusEngine.mainStatus(for: inputs)
        }
        let phaseInputs: [WritableKeyPath<StatusInputs, ThreePhase<Double>?>] = [
            \.voltages, \.currents, \.activePowers, \.powerFactors,
        ]
        for v in Self.values {
            for path in phaseInputs {
                var one = healthyInputs()
                one[keyPath: path]?.b = v
                feed(one)
                var all = healthyInputs()
                all[keyPath: path] = ThreePhase(all: v)
                feed(all)
            }
            feed(healthy { $0.totalPowerFactor = v })
            feed(healthy { $0.prepaidEnergyKWh = v; $0.prepaidMode = true })
            var threshold = healthyInputs()
            threshold.loadThresholdKW = v
            feed(threshold)
        }
        // Every threshold word the meter can hold (0x0026 is a UInt16 in kW).
        for word in 0...0xFFFF {
            var inputs = healthy { $0.activePowers = ThreePhase(3e38, -3e38, 1e20) }
            inputs.loadThresholdKW = Double(UInt16(word))
            _ = StatusEngine.mainStatus(for: inputs)
        }
    }
}
