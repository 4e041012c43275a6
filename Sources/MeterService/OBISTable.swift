import KPM33B

/// An OBIS code `A-B:C.D.E.F` (IEC 62056-61).
public struct OBISCode: Sendable, Hashable, CustomStringConvertible {
    public let a: Int, b: Int, c: Int, d: Int, e: Int, f: Int

    public init(_ a: Int, _ b: Int, _ c: Int, _ d: Int, _ e: Int, _ f: Int = 255) {
        (self.a, self.b, self.c, self.d, self.e, self.f) = (a, b, c, d, e, f)
    }

    /// Electricity, channel 0: `1-0:C.D.E.F`.
    public static func electricity(_ c: Int, _ d: Int, _ e: Int, f: Int = 255) -> OBISCode {
        OBISCode(1, 0, c, d, e, f)
    }

    public var description: String { "\(a)-\(b):\(c).\(d).\(e).\(f)" }
}

/// DLMS unit enumeration values used here (description chapter 5, plus 44 and 255).
public enum DLMSUnit {
    public static let watt = 27
    public static let voltAmpere = 28
    public static let varUnit = 29
    public static let wattHour = 30
    public static let varHour = 32
    public static let ampere = 33
    public static let volt = 35
    public static let hertz = 44
    public static let none = 255
}

/// Where an OBIS value comes from in the snapshot.
public enum OBISSource: Sendable {
    /// The register as read, in its own unit (V, A, W, var, VA, Hz, power factor).
    case value(FloatRegister)
    /// max(v, 0): the import half of a signed power.
    case importPart(FloatRegister)
    /// max(−v, 0): the export half of a signed power, as a positive number.
    case exportPart(FloatRegister)
    /// kWh → Wh, kvarh → varh.
    case kilo(FloatRegister)
    /// A history run's value at the `month`-th previous settlement day, kWh → Wh; `ts` is the settlement time.
    case history(HistoryRun, month: Int)
    /// 1 when relay 1 (DO1, which switches the load) is closed, 0 when open.
    case relayClosed
    /// The injected operating-status code (AMI code), `ts` = the snapshot's publish time.
    case operatingStatus
}

/// One row of the OBIS table: code, scale, unit and how to get the integer.
public struct OBISDefinition: Sendable {
    public let code: OBISCode
    /// val × 10^scale = physical value in `unit`.
    public let scale: Int
    public let unit: Int
    public let source: OBISSource
    public let quantity: String

    /// The float register the value comes from, if any.
    public var register: FloatRegister? {
        switch source {
        case .value(let r), .importPart(let r), .exportPart(let r), .kilo(let r): return r
        case .history(let run, let month): return run.register(month: month)
        case .relayClosed, .operatingStatus: return nil
        }
    }

    public init(_ code: OBISCode, scale: Int, unit: Int, _ source: OBISSource, _ quantity: String) {
        self.code = code
        self.scale = scale
        self.unit = unit
        self.source = source
        self.quantity = quantity
    }
}

/// The whole mapping, as data. Order matters: clients index `data[N]`.
public enum OBISTable {
    private static func e(_ c: Int, _ d: Int, _ e: Int, f: Int = 255) -> OBISCode { .electricity(c, d, e, f: f) }

    /// The first twelve entries, in the order the MeterExtension #1 sends them (compat facts, binding).
    public static let compatibility: [OBISDefinition] = [
        OBISDefinition(e(32, 7, 0), scale: -1, unit: DLMSUnit.volt, .value(Register.voltageA), "voltage L1"),
        OBISDefinition(e(52, 7, 0), scale: -1, unit: DLMSUnit.volt, .value(Register.voltageB), "voltage L2"),
        OBISDefinition(e(72, 7, 0), scale: -1, unit: DLMSUnit.volt, .value(Register.voltageC), "voltage L3"),
        OBISDefinition(e(31, 7, 0), scale: -2, unit: DLMSUnit.ampere, .value(Register.currentA), "current L1"),
        OBISDefinition(e(51, 7, 0), scale: -2, unit: DLMSUnit.ampere, .value(Register.currentB), "current L2"),
        OBISDefinition(e(71, 7, 0), scale: -2, unit: DLMSUnit.ampere, .value(Register.currentC), "current L3"),
        OBISDefinition(e(1, 7, 0), scale: 0, unit: DLMSUnit.watt, .importPart(Register.activePowerTotal),
                       "active power import A+ (total active power when > 0)"),
        OBISDefinition(e(2, 7, 0), scale: 0, unit: DLMSUnit.watt, .exportPart(Register.activePowerTotal),
                       "active power export A− (−total active power when < 0)"),
        OBISDefinition(e(1, 8, 0), scale: 0, unit: DLMSUnit.wattHour, .kilo(Register.forwardActiveEnergy),
                       "active energy import A+"),
        OBISDefinition(e(2, 8, 0), scale: 0, unit: DLMSUnit.wattHour, .kilo(Register.reverseActiveEnergy),
                       "active energy export A−"),
        OBISDefinition(e(3, 8, 0), scale: 0, unit: DLMSUnit.varHour, .kilo(Register.forwardReactiveEnergy),
                       "reactive energy import Q+"),
        OBISDefinition(e(4, 8, 0), scale: 0, unit: DLMSUnit.varHour, .kilo(Register.reverseReactiveEnergy),
                       "reactive energy export Q−"),
    ]

    /// Index 12 when a status provider is injected and returns a code.
    public static let operatingStatus = OBISDefinition(
        OBISCode(0, 0, 96, 5, 0), scale: 0, unit: DLMSUnit.none, .operatingStatus, "meter operating status (AMI code)")

    /// Current values after the compatibility block.
    public static let extended: [OBISDefinition] = {
        var rows: [OBISDefinition] = []
        let phases = ["L1", "L2", "L3"]
        let activeP = [Register.activePowerA, Register.activePowerB, Register.activePowerC]
        let reactiveP = [Register.reactivePowerA, Register.reactivePowerB, Register.reactivePowerC]
        let apparentP = [Register.apparentPowerA, Register.apparentPowerB, Register.apparentPowerC]
        let pf = [Register.powerFactorA, Register.powerFactorB, Register.powerFactorC]
        let fwdA = [Register.forwardActiveEnergyA, Register.forwardActiveEnergyB, Register.forwardActiveEnergyC]
        let revA = [Register.reverseActiveEnergyA, Register.reverseActiveEnergyB, Register.reverseActiveEnergyC]
        let fwdQ = [Register.forwardReactiveEnergyA, Register.forwardReactiveEnergyB, Register.forwardReactiveEnergyC]
        let revQ = [Register.reverseReactiveEnergyA, Register.reverseReactiveEnergyB, Register.reverseReactiveEnergyC]
        let demand = [Register.apparentDemandA, Register.apparentDemandB, Register.apparentDemandC]
        let phaseC = [20, 40, 60]  // C = 20/40/60 + quantity for L1/L2/L3
        /// One row per phase: C = 20/40/60 + `quantity`, D = `d`.
        func perPhase(_ quantity: Int, _ d: Int, scale: Int, unit: Int, _ registers: [FloatRegister],
                      _ source: (FloatRegister) -> OBISSource, _ name: String) {
            for (i, p) in phases.enumerated() {
                rows.append(OBISDefinition(e(phaseC[i] + quantity, d, 0), scale: scale, unit: unit,
                                           source(registers[i]), "\(name) \(p)"))
            }
        }

        perPhase(1, 7, scale: 0, unit: DLMSUnit.watt, activeP, OBISSource.importPart, "active power import A+")
        perPhase(2, 7, scale: 0, unit: DLMSUnit.watt, activeP, OBISSource.exportPart, "active power export A−")
        rows.append(OBISDefinition(e(3, 7, 0), scale: 0, unit: DLMSUnit.varUnit,
                                   .importPart(Register.reactivePowerTotal), "reactive power Q+"))
        rows.append(OBISDefinition(e(4, 7, 0), scale: 0, unit: DLMSUnit.varUnit,
                                   .exportPart(Register.reactivePowerTotal), "reactive power Q−"))
        perPhase(3, 7, scale: 0, unit: DLMSUnit.varUnit, reactiveP, OBISSource.importPart, "reactive power Q+")
        perPhase(4, 7, scale: 0, unit: DLMSUnit.varUnit, reactiveP, OBISSource.exportPart, "reactive power Q−")
        rows.append(OBISDefinition(e(9, 7, 0), scale: 0, unit: DLMSUnit.voltAmpere,
                                   .value(Register.apparentPowerTotal), "apparent power S"))
        perPhase(9, 7, scale: 0, unit: DLMSUnit.voltAmpere, apparentP, OBISSource.value, "apparent power S")
        rows.append(OBISDefinition(e(13, 7, 0), scale: -3, unit: DLMSUnit.none,
                                   .value(Register.powerFactorTotal), "power factor"))
        perPhase(13, 7, scale: -3, unit: DLMSUnit.none, pf, OBISSource.value, "power factor")
        rows.append(OBISDefinition(e(14, 7, 0), scale: -2, unit: DLMSUnit.hertz,
                                   .value(Register.frequency), "frequency"))
        let energies: [(Int, [FloatRegister], Int, String)] = [
            (1, fwdA, DLMSUnit.wattHour, "active energy import A+"),
            (2, revA, DLMSUnit.wattHour, "active energy export A−"),
            (3, fwdQ, DLMSUnit.varHour, "reactive energy import Q+"),
            (4, revQ, DLMSUnit.varHour, "reactive energy export Q−"),
        ]
        for (q, regs, unit, name) in energies {
            perPhase(q, 8, scale: 0, unit: unit, regs, OBISSource.kilo, name)
        }
        rows.append(OBISDefinition(e(15, 8, 0), scale: 0, unit: DLMSUnit.wattHour,
                                   .kilo(Register.combinedActiveEnergy), "combined active energy |A|"))
        let tariffNames = ["T1 (sharp)", "T2 (peak)", "T3 (flat)", "T4 (valley)"]
        for (t, reg) in Register.tariffActiveEnergy.enumerated() {
            rows.append(OBISDefinition(e(15, 8, t + 1), scale: 0, unit: DLMSUnit.wattHour,
                                       .kilo(reg), "combined active energy |A| \(tariffNames[t])"))
        }
        perPhase(9, 4, scale: 0, unit: DLMSUnit.voltAmpere, demand, OBISSource.value, "apparent demand, current period,")
        rows.append(OBISDefinition(OBISCode(0, 0, 96, 3, 10), scale: 0, unit: DLMSUnit.none, .relayClosed,
                                   "load relay: 1 = closed (supply on), 0 = open"))
        return rows
    }()

    /// Billing-period values: the combined-active history runs (total and T1…T4) at the previous 1…12
    /// settlement days, F = 101…112.
    public static let history: [OBISDefinition] = {
        var rows: [OBISDefinition] = []
        for run in Register.historyRuns where run.active {
            for month in 1..<HistoryRun.months {
                rows.append(OBISDefinition(e(15, 8, run.tariff, f: 100 + month), scale: 0, unit: DLMSUnit.wattHour,
                                           .history(run, month: month), "\(run.name), previous settlement \(month)"))
            }
        }
        return rows
    }()
}
