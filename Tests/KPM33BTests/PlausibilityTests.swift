import XCTest
import ModbusCore
@testable import KPM33B

/// Float32 bit patterns for sweeps: every sign × every exponent (0…255) × mantissa extremes and a spread of
/// pseudo-random mantissas. 2^32 patterns through every conversion takes minutes in a debug build; this stratified
/// set reaches every exponent (zeros, subnormals, normals up to ±3.4e38, ±∞, quiet and signalling NaNs) with the
/// mantissas where rounding and range edges live. `METEREXT_FULL_FLOAT_SWEEP=1` runs all 2^32 where a test offers it.
enum FloatPatterns {
    static let mantissas: [UInt32] = {
        var m: [UInt32] = [0, 1, 2, 3, 0x3F_FFFF, 0x40_0000, 0x40_0001, 0x7F_FFFE, 0x7F_FFFF, 0x10_0000, 0x55_5555,
                           0x2A_AAAA, 0x00_0F00]
        var x: UInt32 = 0x1234_5678
        for _ in 0..<19 {
            x ^= x << 13; x ^= x >> 17; x ^= x << 5  // xorshift32: deterministic
            m.append(x & 0x7F_FFFF)
        }
        return m
    }()

    static let stratified: [UInt32] = {
        var out: [UInt32] = []
        for sign: UInt32 in [0, 1] {
            for exponent: UInt32 in 0...255 {
                for mantissa in mantissas { out.append(sign << 31 | exponent << 23 | mantissa) }
            }
        }
        return out
    }()

    /// Every range bound and its neighbours one ulp away, plus the extremes the issue names.
    static func edges(_ ranges: [ClosedRange<Float>]) -> [Float] {
        var v: [Float] = [3.0e38, -3.0e38, 1e20, -1e20, .greatestFiniteMagnitude, -.greatestFiniteMagnitude,
                          .infinity, -.infinity, .nan, -.nan, .signalingNaN, .leastNonzeroMagnitude,
                          -.leastNonzeroMagnitude, .leastNormalMagnitude, 0, -0.0]
        for r in ranges {
            for b in [r.lowerBound, r.upperBound] { v += [b, b.nextUp, b.nextDown] }
        }
        return v
    }

    static var full: Bool { ProcessInfo.processInfo.environment["METEREXT_FULL_FLOAT_SWEEP"] == "1" }
}

final class PlausibilityTests: XCTestCase {
    /// Every float register of the map, the history and the parameter floats.
    static let allRegisters: [FloatRegister] = Register.allBasic + Register.allEnergy + Register.allDemand
        + Register.historyRuns.flatMap { run in (0..<HistoryRun.months).map { run.register(month: $0) } }
        + [Register.prepaidEnergy, Register.overdraft]

    func testRangesArePhysicalNotArbitrary() {
        XCTAssertEqual(Plausibility.range(of: Register.voltageA), 0...1_000)
        XCTAssertEqual(Plausibility.range(of: Register.voltageAB), 0...1_732)
        XCTAssertEqual(Plausibility.range(of: Register.currentC), -400...400)
        XCTAssertEqual(Plausibility.range(of: Register.activePowerB), -400_000...400_000)
        XCTAssertEqual(Plausibility.range(of: Register.activePowerTotal), -1_200_000...1_200_000)
        XCTAssertEqual(Plausibility.range(of: Register.apparentDemandC), -400_000...400_000)
        XCTAssertEqual(Plausibility.range(of: Register.powerFactorTotal), -1.001...1.001)
        XCTAssertEqual(Plausibility.range(of: Register.frequency), 0...100)
        XCTAssertEqual(Plausibility.range(of: Register.forwardActiveEnergy), 0...100_000_000)
        XCTAssertEqual(Plausibility.range(of: Register.reverseReactiveEnergyC), 0...100_000_000)
        XCTAssertEqual(Plausibility.range(of: Register.combinedActiveEnergy), -100_000_000...100_000_000)
        XCTAssertEqual(Plausibility.range(of: Register.historyRuns[9].register(month: 12)),
                       -100_000_000...100_000_000)
        XCTAssertEqual(Plausibility.range(of: Register.prepaidEnergy), -100_000_000...100_000_000)
        // Every register of the map resolves back to itself by address (one source of names for messages).
        for r in Self.allRegisters { XCTAssertEqual(Register.at(r.address), r, r.name) }
        XCTAssertNil(Register.at(0x0031))
    }

    func testEveryBitPatternIsJudgedAndNothingNonFiniteIsServed() {
        let patterns = FloatPatterns.stratified
        XCTAssertEqual(patterns.count, 2 * 256 * FloatPatterns.mantissas.count)
        for r in Self.allRegisters {
            let range = Plausibility.range(of: r)
            for bits in patterns {
                let v = Float(bitPattern: bits)
                let reading = RegisterReading(v, at: r.address)
                if case .plausible(let p) = reading {
                    XCTAssertTrue(p.isFinite && range.contains(p), "\(r.name): \(p) served")
                } else {
                    XCTAssertFalse(v.isFinite && range.contains(v), "\(r.name): \(v) refused")
                }
            }
            for v in FloatPatterns.edges([range]) {
                XCTAssertEqual(Plausibility.isPlausible(v, at: r.address), range.contains(v), "\(r.name): \(v)")
            }
        }
    }

    func testMessagesNameQuantityValueAndRange() {
        XCTAssertEqual(Plausibility.message(Register.voltageA, value: 3e38),
                       "the meter sent 3e+38 V for phase A voltage (0x0030), outside the plausible range 0…1000 V: not served")
        XCTAssertTrue(Plausibility.message(Register.powerFactorTotal, value: .nan).contains("sent nan for total power factor"))
        XCTAssertTrue(Plausibility.message(Register.forwardActiveEnergy, value: -.infinity)
            .contains("-inf kWh for forward (import) active energy (0x0082)"))
    }

    // MARK: the poll loop

    final class Reports: @unchecked Sendable {
        var items: [(FloatRegister, Float)] = []
    }

    func makePoller() -> (SimulatedMeter, ManualClock, MeterPoller, Reports) {
        let meter = SimulatedMeter(unit: 1, serialNumber: "33B0000126042")
        meter.scenario.wobble = false
        let clock = ManualClock()
        let poller = MeterPoller(client: LoopbackClient(meter: meter), unit: 1, lineDescription: "9600 8E1",
                                 clock: clock.pollClock)
        let reports = Reports()
        poller.onImplausibleValue = { r, v in reports.items.append((r, v)) }
        return (meter, clock, poller, reports)
    }

    func testImplausibleValuesAreCountedReportedOnceAndNotServed() {
        let (meter, clock, poller, reports) = makePoller()
        meter.scenario.voltage = (3.0e38, 229.8, .nan)
        poller.runCycle()
        var s = poller.snapshot()
        XCTAssertEqual(s.health, .online, "an implausible value is not a link failure")
        XCTAssertNil(s.value(Register.voltageA))
        XCTAssertEqual(s.reading(Register.voltageA), .implausible(3.0e38))
        XCTAssertEqual(s.value(Register.voltageB), 229.8)
        XCTAssertNil(s.value(Register.voltageC))
        // The simulator derives the line voltages from the phase voltages: those are implausible too.
        XCTAssertNil(s.value(Register.voltageAB))
        let perCycle = s.implausibleValues
        let first = reports.items.map(\.0.address)
        XCTAssertEqual(Int(perCycle), first.count)
        XCTAssertTrue(first.contains(0x0030) && first.contains(0x0034) && !first.contains(0x0032), "\(first)")
        // Still implausible: counted on every read, reported once.
        clock.advance(seconds: 1)
        poller.runCycle()
        s = poller.snapshot()
        XCTAssertEqual(s.implausibleValues, 2 * perCycle)
        XCTAssertEqual(reports.items.count, first.count)
        // Back to normal, then a new episode is reported again.
        meter.scenario.voltage = (230, 230, 230)
        clock.advance(seconds: 1)
        poller.runCycle()
        XCTAssertEqual(poller.snapshot().value(Register.voltageA), 230)
        meter.scenario.voltage = (-1, 230, 230)
        clock.advance(seconds: 1)
        poller.runCycle()
        let again = reports.items.dropFirst(first.count)
        XCTAssertEqual(again.first?.0.address, 0x0030)
        XCTAssertEqual(again.first?.1, -1)
        XCTAssertEqual(poller.snapshot().implausibleValues, 2 * perCycle + UInt64(again.count))
    }

    func testImplausibleParameterFloatsAreCountedAndNotUsed() {
        let (meter, _, poller, reports) = makePoller()
        meter.writeFloat(KPM33BMap.prepaidEnergy, -.infinity)
        meter.writeFloat(KPM33BMap.overdraft, 1e20)
        poller.runCycle()
        let s = poller.snapshot()
        XCTAssertNil(s.parameters?.plausiblePrepaidEnergyKWh)
        XCTAssertEqual(s.parameters?.prepaidEnergyKWh, -.infinity)
        XCTAssertEqual(s.implausibleValues, 2)
        XCTAssertEqual(reports.items.map(\.0.address), [KPM33BMap.prepaidEnergy, KPM33BMap.overdraft])
    }

    /// The simulator's own values (the built-in meter of `run --simulate`) are all plausible.
    func testSimulatorIsPlausible() {
        let (_, clock, poller, reports) = makePoller()
        for _ in 0..<3 {
            poller.runCycle()
            clock.advance(seconds: 3600)
        }
        XCTAssertEqual(poller.snapshot().implausibleValues, 0, reports.items.map { "\($0.0.name)=\($0.1)" }.description)
    }

    // MARK: word registers

    /// Every 16-bit value in every word of the parameter area decodes (serial number, clock, control mode, forced
    /// power, thresholds, prepaid floats) without a trap, and the texts stay bounded: each value in all words at
    /// once, and mixed with its neighbours (a different value in each word).
    func testEveryWordValueInEveryParameterWordDecodes() {
        let count = SnapshotExchange.parameterCount
        let words = UnsafeMutableBufferPointer<UInt16>.allocate(capacity: count)
        defer { words.deallocate() }
        for value in 0...0xFFFF {
            for mix: UInt16 in [0, 0x9E37, 0x00FF] {
                for i in 0..<count { words[i] = UInt16(value) ^ (mix &* UInt16(i)) }
                let p = MeterPoller.decodeParameters(UnsafeBufferPointer(words))
                XCTAssertLessThan(p.clock.text.utf8.count, 40)
                // Issue 14: the 13 characters as stored, or their 26 hex digits; never empty.
                XCTAssertTrue([13, 26].contains(p.serialNumber.utf8.count), p.serialNumber)
                _ = p.controlMode
                _ = p.plausiblePrepaidEnergyKWh
            }
        }
    }
}
