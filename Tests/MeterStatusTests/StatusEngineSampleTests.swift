import XCTest
@testable import MeterStatus

/// Issue 18: the engine feeds its timers from `StatusEngine.sample` (no strings, no arrays) and makes the words of
/// `judge` only for a raised alert. Both must classify every input alike, or debouncing would change.
final class StatusEngineSampleTests: XCTestCase {
    /// A deterministic generator (SplitMix64), so a failure names a reproducible case.
    private struct Random {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        mutating func unit() -> Double { Double(next() >> 11) / Double(1 << 53) }
        mutating func pick<T>(_ values: [T]) -> T { values[Int(next() % UInt64(values.count))] }
        mutating func chance(_ p: Double) -> Bool { unit() < p }
    }

    /// Values around every limit of the default configuration, plus extremes.
    private func value(_ r: inout Random, around centres: [Double], spread: Double) -> Double {
        if r.chance(0.02) { return r.pick([.nan, .infinity, -.infinity, 0, -0.0, 1e30]) }
        return r.pick(centres) + (r.unit() * 2 - 1) * spread
    }

    private func inputs(_ r: inout Random) -> StatusInputs {
        func three(_ r: inout Random, _ centres: [Double], _ spread: Double) -> ThreePhase<Double>? {
            r.chance(0.05) ? nil : ThreePhase(value(&r, around: centres, spread: spread),
                                              value(&r, around: centres, spread: spread),
                                              value(&r, around: centres, spread: spread))
        }
        var i = StatusInputs()
        i.voltages = three(&r, [230, 253, 248.4, 207, 211.6, 40, 0], 8)
        i.currents = three(&r, [0, 1, 5, 10, -10], 6)
        i.activePowers = three(&r, [0, 100, -100, 90, -90, 20, -20, 500, -500, 2000], 60)
        i.powerFactors = three(&r, [0.8, 0.85, -0.8, 1], 0.1)
        i.totalPowerFactor = r.chance(0.05) ? nil : value(&r, around: [0.8, 0.85, -0.8, -0.85, 1], spread: 0.08)
        return i
    }

    func testSampleAgreesWithJudgeOverRandomInputs() {
        var r = Random(state: 18)
        var configs = [StatusEngineConfig()]
        var importOnly = StatusEngineConfig()
        importOnly.importOnlyPhases = [.b]
        configs.append(importOnly)
        var all = StatusEngineConfig()
        all.importOnlyPhases = [.a, .b, .c]
        all.reverseComparableRatio = 0.05
        configs.append(all)
        var seen: [StatusEngine.Condition: Set<String>] = [:]
        for n in 0..<60_000 {
            let config = configs[n % configs.count]
            let inputs = inputs(&r)
            for condition in StatusEngine.Condition.allCases {
                let judged = StatusEngine.judge(condition, inputs: inputs, config: config).sample
                let sampled = StatusEngine.sample(condition, inputs: inputs, config: config)
                seen[condition, default: []].insert("\(judged)")
                if judged != sampled {
                    XCTFail("\(condition) case \(n): judge says \(judged), sample says \(sampled) for \(inputs)")
                    return
                }
            }
        }
        // The inputs reach every class of every condition, or the comparison above proves little.
        for condition in StatusEngine.Condition.allCases {
            XCTAssertEqual(seen[condition], ["beyond", "inBand", "within", "unknown"], "\(condition)")
        }
    }
}
