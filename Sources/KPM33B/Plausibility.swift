/// What a KPM33B can physically report, per quantity: the one source of truth for "is this value served?".
///
/// A value outside its range (or NaN, ±∞) did not come from a working meter — a glitching meter, a second device
/// answering for the unit, a corrupted reply that still had a valid CRC — and is never served: the snapshot's
/// `value(_:)` returns nil for it, `meter_reading` leaves its entry out, the poll loop counts it (`implausible` in
/// `link_errors`) and reports it once to the log.
///
/// The bounds are deliberately wide: they must never drop a real reading, only garbage. The KPM33B family is a
/// 3 × 57.7/100 V … 3 × 400/690 V meter for direct connection up to 80 A (its values are primary values, no CT/VT
/// ratio), and its LCD counts energy with 8 digits.
public enum Plausibility {
    /// L–N voltage, V. The highest rated phase voltage in the family is 400 V; 1000 V leaves room for any surge
    /// the meter's input survives. RMS: never negative.
    public static let phaseVoltage: ClosedRange<Float> = 0...1_000
    /// L–L voltage, V: √3 × the phase bound.
    public static let lineVoltage: ClosedRange<Float> = 0...1_732
    /// Current, A: 5 × the 80 A maximum current. A short circuit that lasts long enough to move a one-second RMS
    /// value further trips any breaker first. Signed values are accepted (some firmware signs current by direction).
    public static let current: ClosedRange<Float> = -400...400
    /// One phase's active, reactive or apparent power (W, var, VA), and the apparent demand: ± the phase voltage
    /// bound × the current bound.
    public static let phasePower: ClosedRange<Float> = -400_000...400_000
    /// Total power of three phases.
    public static let totalPower: ClosedRange<Float> = -1_200_000...1_200_000
    /// Power factor: |P| / S ≤ 1; 0.001 of slack for the meter's own rounding of P / S.
    public static let powerFactor: ClosedRange<Float> = -1.001...1.001
    /// Frequency, Hz: 0 when there is no voltage to measure; grids run at 50/60 Hz and the meter's measuring range
    /// ends well below 100 Hz.
    public static let frequency: ClosedRange<Float> = 0...100
    /// Accumulated forward/reverse energy (kWh, kvarh): the LCD has 8 digits, so the meter cannot count past
    /// 10^8 (whatever the decimal point's position); a counter never runs backwards below 0.
    public static let energy: ClosedRange<Float> = 0...100_000_000
    /// Combined energies (a configurable sum or difference of import and export: may be negative), tariff
    /// registers, the monthly history, prepaid energy and overdraft: ± the display bound.
    public static let signedEnergy: ClosedRange<Float> = -100_000_000...100_000_000

    /// The range of the float register at `address` (basic, energy, demand, history blocks and the prepaid/overdraft
    /// floats of the parameter area). Total: an address outside the map gets the energy display bound.
    public static func range(at address: UInt16) -> ClosedRange<Float> {
        switch address {
        case 0x0030...0x0035: return phaseVoltage
        case 0x0036...0x003B: return current
        case 0x003C...0x0041: return lineVoltage
        case 0x0042...0x0047, 0x004A...0x004F, 0x0052...0x0057: return phasePower
        case 0x0048...0x0049, 0x0050...0x0051, 0x0058...0x0059: return totalPower
        case 0x005A...0x0061: return powerFactor
        case 0x0062...0x0063: return frequency
        case 0x0068...0x007F, 0x0082...0x0085, 0x0088...0x008B: return energy
        case 0x0200...0x0205: return phasePower
        default: return signedEnergy  // combined 0x0080/0x0086, tariffs, history, prepaid, overdraft
        }
    }

    public static func range(of register: FloatRegister) -> ClosedRange<Float> { range(at: register.address) }

    /// Whether `value` may be served for the register at `address`. NaN and ±∞ never are.
    @inline(__always)
    public static func isPlausible(_ value: Float, at address: UInt16) -> Bool {
        // `contains` is false for NaN; the ranges are finite, so ±∞ fall outside too.
        range(at: address).contains(value)
    }

    /// "0…1000 V" for messages.
    public static func describe(_ range: ClosedRange<Float>, unit: Unit) -> String {
        func text(_ v: Float) -> String {
            v == v.rounded() && abs(v) < 1e9 ? String(Int64(v)) : String(v)
        }
        let suffix = unit == .none ? "" : " " + unit.rawValue
        return "\(text(range.lowerBound))…\(text(range.upperBound))\(suffix)"
    }

    /// A value the meter sent for a register, for a reason or a log line: finite values as Swift prints them
    /// (`3e+38`), and `NaN`, `inf`, `-inf`.
    public static func describe(_ value: Float) -> String { String(value) }

    /// One line for the log and for `meter_reading`'s `reason`.
    public static func message(_ register: FloatRegister, value: Float) -> String {
        let hex = String(register.address, radix: 16, uppercase: true)
        let address = "0x" + String(repeating: "0", count: max(0, 4 - hex.count)) + hex
        let unit = register.unit == .none ? "" : " " + register.unit.rawValue
        return "the meter sent \(describe(value))\(unit) for \(register.name) (\(address)), outside the plausible "
            + "range \(describe(range(of: register), unit: register.unit)): not served"
    }
}

/// What a snapshot holds for one float register.
public enum RegisterReading: Sendable, Equatable {
    /// Its block has not been read yet.
    case missing
    /// A value within the register's plausible range.
    case plausible(Float)
    /// A value the meter did send, outside the plausible range or not finite: never served.
    case implausible(Float)

    public init(_ value: Float, at address: UInt16) {
        self = Plausibility.isPlausible(value, at: address) ? .plausible(value) : .implausible(value)
    }

    public static func == (a: RegisterReading, b: RegisterReading) -> Bool {
        switch (a, b) {
        case (.missing, .missing): return true
        case (.plausible(let x), .plausible(let y)), (.implausible(let x), .implausible(let y)):
            return x.bitPattern == y.bitPattern
        default: return false
        }
    }
}

extension Register {
    /// The float register at `address` with its name and unit, from the register map; nil for an address that is
    /// not the first word of a float.
    public static func at(_ address: UInt16) -> FloatRegister? {
        if let r = (allBasic + allEnergy + allDemand).first(where: { $0.address == address }) { return r }
        for run in historyRuns where address >= run.start && address < run.start + UInt16(2 * HistoryRun.months) {
            let offset = Int(address - run.start)
            return offset % 2 == 0 ? run.register(month: offset / 2) : nil
        }
        switch address {
        case KPM33BMap.prepaidEnergy: return prepaidEnergy
        case KPM33BMap.overdraft: return overdraft
        default: return nil
        }
    }

    /// The two floats of the parameter area (remaining prepaid energy and the overdraft limit).
    public static let prepaidEnergy = FloatRegister(KPM33BMap.prepaidEnergy, "remaining prepaid energy", .kilowattHour)
    public static let overdraft = FloatRegister(KPM33BMap.overdraft, "overdraft limit", .kilowattHour)
}
