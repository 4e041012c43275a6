import KPM33B

/// What the load profile keeps, as data: every column of the `interval` table and every OBIS code of
/// `meter_history` comes from these two lists.
///
/// Values are stored in physical units (kWh, kvarh, W, V, A), as the meter sends them; `meter_history` scales them
/// like `meter_reading` (energies in Wh/varh with scale 0, voltage scale −1, current scale −2).
public enum HistoryChannels {
    /// A register whose value at the interval end is recorded (the meter's own counters).
    public struct Energy: Sendable {
        public let c: Int, e: Int
        public let register: FloatRegister
        /// DLMS unit of the API value (Wh = 30, varh = 32).
        public let unit: Int
        /// Whether `meter_history` also gives the energy per bucket (OBIS D = 29, "time integral 5").
        public let delta: Bool
        public var obis: String { "1-0:\(c).8.\(e).255" }
        public var deltaOBIS: String { "1-0:\(c).29.\(e).255" }
        public var column: String { "e\(c)_\(e)" }
    }

    /// How a sampled power/voltage/current value is derived from a register.
    public enum Derivation: Sendable { case value, importPart, exportPart }

    /// A quantity sampled every poll cycle and kept as mean, minimum and maximum over the interval.
    public struct Statistic: Sendable {
        public let c: Int
        public let register: FloatRegister
        public let derivation: Derivation
        public let scale: Int
        public let unit: Int
        /// Mean over the interval: D = 5 ("last average"); minimum D = 3, maximum D = 6 (IEC 62056-61).
        public var meanOBIS: String { "1-0:\(c).5.0.255" }
        public var minOBIS: String { "1-0:\(c).3.0.255" }
        public var maxOBIS: String { "1-0:\(c).6.0.255" }
        public var column: String { "p\(c)" }

        public func value(_ raw: Float) -> Double {
            let v = Double(raw)
            switch derivation {
            case .value: return v
            case .importPart: return max(v, 0)
            case .exportPart: return max(-v, 0)
            }
        }
    }

    static let wh = 30, varh = 32, watt = 27, volt = 35, ampere = 33

    public static let energies: [Energy] = {
        var rows: [Energy] = [
            Energy(c: 1, e: 0, register: Register.forwardActiveEnergy, unit: wh, delta: true),
            Energy(c: 2, e: 0, register: Register.reverseActiveEnergy, unit: wh, delta: true),
            Energy(c: 3, e: 0, register: Register.forwardReactiveEnergy, unit: varh, delta: true),
            Energy(c: 4, e: 0, register: Register.reverseReactiveEnergy, unit: varh, delta: true),
            Energy(c: 15, e: 0, register: Register.combinedActiveEnergy, unit: wh, delta: true),
        ]
        for (t, register) in Register.tariffActiveEnergy.enumerated() {
            rows.append(Energy(c: 15, e: t + 1, register: register, unit: wh, delta: true))
        }
        let perPhase: [(Int, [FloatRegister], Int)] = [
            (1, [Register.forwardActiveEnergyA, Register.forwardActiveEnergyB, Register.forwardActiveEnergyC], wh),
            (2, [Register.reverseActiveEnergyA, Register.reverseActiveEnergyB, Register.reverseActiveEnergyC], wh),
            (3, [Register.forwardReactiveEnergyA, Register.forwardReactiveEnergyB, Register.forwardReactiveEnergyC], varh),
            (4, [Register.reverseReactiveEnergyA, Register.reverseReactiveEnergyB, Register.reverseReactiveEnergyC], varh),
        ]
        for (q, registers, unit) in perPhase {
            for (i, register) in registers.enumerated() {
                rows.append(Energy(c: [20, 40, 60][i] + q, e: 0, register: register, unit: unit, delta: false))
            }
        }
        return rows
    }()

    public static let statistics: [Statistic] = [
        Statistic(c: 16, register: Register.activePowerTotal, derivation: .value, scale: 0, unit: watt),
        Statistic(c: 1, register: Register.activePowerTotal, derivation: .importPart, scale: 0, unit: watt),
        Statistic(c: 2, register: Register.activePowerTotal, derivation: .exportPart, scale: 0, unit: watt),
        Statistic(c: 32, register: Register.voltageA, derivation: .value, scale: -1, unit: volt),
        Statistic(c: 52, register: Register.voltageB, derivation: .value, scale: -1, unit: volt),
        Statistic(c: 72, register: Register.voltageC, derivation: .value, scale: -1, unit: volt),
        Statistic(c: 31, register: Register.currentA, derivation: .value, scale: -2, unit: ampere),
        Statistic(c: 51, register: Register.currentB, derivation: .value, scale: -2, unit: ampere),
        Statistic(c: 71, register: Register.currentC, derivation: .value, scale: -2, unit: ampere),
    ]

    /// The energies whose difference per interval (and across a gap) is kept: import/export, active/reactive,
    /// combined and the tariffs.
    public static let gapEnergies: [Energy] = energies.filter(\.delta)
    /// Their indices in `energies`.
    public static let deltaEnergyIndices: [Int] = energies.indices.filter { energies[$0].delta }

    /// Column names of the `interval` table after `seq, meter, start, end`, in this order: energies at the end,
    /// energy per interval (`d…`), then mean/min/max per statistic.
    public static let valueColumns: [String] = energies.map(\.column) + gapEnergies.map { "d\($0.c)_\($0.e)" }
        + statistics.flatMap { [$0.column + "_mean", $0.column + "_min", $0.column + "_max"] }

    /// The OBIS code of each value column, same order (`ProfileInterval.values`).
    public static let valueOBIS: [String] = energies.map(\.obis) + gapEnergies.map(\.deltaOBIS)
        + statistics.flatMap { [$0.meanOBIS, $0.minOBIS, $0.maxOBIS] }

    /// Reads the energies of one snapshot (physical units; nil when not read or implausible).
    public static func energyValues(_ snapshot: MeterSnapshot) -> [Double?] {
        energies.map { snapshot.value($0.register).map(Double.init) }
    }

    /// Reads the sampled statistics of one snapshot.
    public static func statisticValues(_ snapshot: MeterSnapshot) -> [Double?] {
        statistics.map { s in snapshot.value(s.register).map { s.value($0) } }
    }

    /// `energyValues` and `statisticValues` into the caller's arrays, reusing their storage (issue 18: the
    /// recorder samples every poll cycle; it allocates only when a previous sample is still held elsewhere).
    public static func read(_ snapshot: MeterSnapshot, energies out: inout [Double?], statistics outStats: inout [Double?]) {
        if out.count != energies.count { out = Array(repeating: nil, count: energies.count) }
        for i in energies.indices { out[i] = snapshot.value(energies[i].register).map(Double.init) }
        if outStats.count != statistics.count { outStats = Array(repeating: nil, count: statistics.count) }
        for i in statistics.indices {
            let s = statistics[i]
            outStats[i] = snapshot.value(s.register).map { s.value($0) }
        }
    }
}
