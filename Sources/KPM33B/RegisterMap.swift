/// The KPM33B Modbus register map as data (manual V3.4, section 6; see README "Register map").
///
/// Measurements are IEEE-754 float32, big-endian, high word first, two registers each, primary values.
/// The poll loop reads whole blocks; everything else addresses a value by its `FloatRegister`.

/// A contiguous run of holding registers read with one or more FC03 requests.
public struct RegisterBlock: Sendable, Hashable {
    public let group: RegisterGroup
    public let start: UInt16
    public let count: UInt16

    public init(group: RegisterGroup, start: UInt16, count: UInt16) {
        self.group = group
        self.start = start
        self.count = count
    }

    public func contains(_ address: UInt16) -> Bool {
        address >= start && address < start &+ count
    }
}

/// What the poll plan schedules separately. Each group carries its own read timestamp in a snapshot.
public enum RegisterGroup: Int, Sendable, CaseIterable {
    case basic, energy, demand, history, parameters, relay
}

public enum Unit: String, Sendable {
    case volt = "V", ampere = "A", watt = "W", voltAmpere = "VA", varUnit = "var"
    case kilowattHour = "kWh", kilovarHour = "kvarh", hertz = "Hz", none = ""
}

/// One float32 value of the meter.
public struct FloatRegister: Sendable, Hashable {
    public let address: UInt16
    public let name: String
    public let unit: Unit

    public init(_ address: UInt16, _ name: String, _ unit: Unit) {
        self.address = address
        self.name = name
        self.unit = unit
    }
}

public enum KPM33BMap {
    /// FC03 may read at most 125 registers per request.
    public static let maxRegistersPerRead: UInt16 = 125

    public static let basic = RegisterBlock(group: .basic, start: 0x0030, count: 52)
    public static let energy = RegisterBlock(group: .energy, start: 0x0068, count: 52)
    public static let demand = RegisterBlock(group: .demand, start: 0x0200, count: 6)
    /// 0x009C–0x019F: ten runs of 13 floats ("this month", then previous 1 … 12): three FC03 reads of at most
    /// 124 registers (an even count keeps every float inside one reply).
    public static let history = RegisterBlock(group: .history, start: 0x009C, count: 260)
    /// 0x0000–0x0026: password … load threshold, read in one request.
    public static let parameters = RegisterBlock(group: .parameters, start: 0x0000, count: 0x27)

    public static let floatBlocks: [RegisterBlock] = [basic, energy, demand, history]

    // MARK: coils
    /// Relay 1 (DO1). FC01 reply bit0/1/2 = phase A/B/C load relay closed. FC05 0xFF00 closes, 0x0000 opens.
    public static let relayCoil: UInt16 = 0x0001
    /// The manual reads one coil; the reply byte still carries all three phase bits.
    public static let relayCoilCount: UInt16 = 1

    // MARK: parameter words
    public static let password: UInt16 = 0x0000
    public static let modbusAddress: UInt16 = 0x0001
    public static let lineSettings: UInt16 = 0x0002
    public static let clearCommand: UInt16 = 0x000C
    public static let prepaidEnergy: UInt16 = 0x000E
    public static let serialNumber: UInt16 = 0x0012
    public static let serialNumberRegisters: UInt16 = 7
    public static let wirelessStatus: UInt16 = 0x001A
    public static let forcedPower: UInt16 = 0x001B
    public static let loadControlDuration: UInt16 = 0x001D
    public static let controlMode: UInt16 = 0x001E
    public static let overdraft: UInt16 = 0x0020
    public static let clock: UInt16 = 0x0023
    public static let loadThreshold: UInt16 = 0x0026

    public static let controlModeLocal: UInt16 = 0xDD11
    public static let controlModeRemote: UInt16 = 0xDD22
}

/// Every float the meter gives, by name.
public enum Register {
    // basic block 0x0030…0x0063
    public static let voltageA = FloatRegister(0x0030, "phase A voltage", .volt)
    public static let voltageB = FloatRegister(0x0032, "phase B voltage", .volt)
    public static let voltageC = FloatRegister(0x0034, "phase C voltage", .volt)
    public static let currentA = FloatRegister(0x0036, "phase A current", .ampere)
    public static let currentB = FloatRegister(0x0038, "phase B current", .ampere)
    public static let currentC = FloatRegister(0x003A, "phase C current", .ampere)
    public static let voltageAB = FloatRegister(0x003C, "line voltage AB", .volt)
    public static let voltageBC = FloatRegister(0x003E, "line voltage BC", .volt)
    public static let voltageCA = FloatRegister(0x0040, "line voltage CA", .volt)
    public static let activePowerA = FloatRegister(0x0042, "phase A active power", .watt)
    public static let activePowerB = FloatRegister(0x0044, "phase B active power", .watt)
    public static let activePowerC = FloatRegister(0x0046, "phase C active power", .watt)
    /// Signed: the meter is bidirectional (negative = export).
    public static let activePowerTotal = FloatRegister(0x0048, "total active power", .watt)
    public static let reactivePowerA = FloatRegister(0x004A, "phase A reactive power", .varUnit)
    public static let reactivePowerB = FloatRegister(0x004C, "phase B reactive power", .varUnit)
    public static let reactivePowerC = FloatRegister(0x004E, "phase C reactive power", .varUnit)
    public static let reactivePowerTotal = FloatRegister(0x0050, "total reactive power", .varUnit)
    public static let apparentPowerA = FloatRegister(0x0052, "phase A apparent power", .voltAmpere)
    public static let apparentPowerB = FloatRegister(0x0054, "phase B apparent power", .voltAmpere)
    public static let apparentPowerC = FloatRegister(0x0056, "phase C apparent power", .voltAmpere)
    public static let apparentPowerTotal = FloatRegister(0x0058, "total apparent power", .voltAmpere)
    public static let powerFactorA = FloatRegister(0x005A, "phase A power factor", .none)
    public static let powerFactorB = FloatRegister(0x005C, "phase B power factor", .none)
    public static let powerFactorC = FloatRegister(0x005E, "phase C power factor", .none)
    public static let powerFactorTotal = FloatRegister(0x0060, "total power factor", .none)
    public static let frequency = FloatRegister(0x0062, "frequency", .hertz)

    // demand 0x0200…0x0205
    public static let apparentDemandA = FloatRegister(0x0200, "phase A apparent demand", .voltAmpere)
    public static let apparentDemandB = FloatRegister(0x0202, "phase B apparent demand", .voltAmpere)
    public static let apparentDemandC = FloatRegister(0x0204, "phase C apparent demand", .voltAmpere)

    // energy block 0x0068…0x009B
    public static let forwardActiveEnergyA = FloatRegister(0x0068, "phase A forward active energy", .kilowattHour)
    public static let forwardActiveEnergyB = FloatRegister(0x006A, "phase B forward active energy", .kilowattHour)
    public static let forwardActiveEnergyC = FloatRegister(0x006C, "phase C forward active energy", .kilowattHour)
    public static let reverseActiveEnergyA = FloatRegister(0x006E, "phase A reverse active energy", .kilowattHour)
    public static let reverseActiveEnergyB = FloatRegister(0x0070, "phase B reverse active energy", .kilowattHour)
    public static let reverseActiveEnergyC = FloatRegister(0x0072, "phase C reverse active energy", .kilowattHour)
    public static let forwardReactiveEnergyA = FloatRegister(0x0074, "phase A forward reactive energy", .kilovarHour)
    public static let forwardReactiveEnergyB = FloatRegister(0x0076, "phase B forward reactive energy", .kilovarHour)
    public static let forwardReactiveEnergyC = FloatRegister(0x0078, "phase C forward reactive energy", .kilovarHour)
    public static let reverseReactiveEnergyA = FloatRegister(0x007A, "phase A reverse reactive energy", .kilovarHour)
    public static let reverseReactiveEnergyB = FloatRegister(0x007C, "phase B reverse reactive energy", .kilovarHour)
    public static let reverseReactiveEnergyC = FloatRegister(0x007E, "phase C reverse reactive energy", .kilovarHour)
    public static let combinedActiveEnergy = FloatRegister(0x0080, "total (combined) active energy", .kilowattHour)
    public static let forwardActiveEnergy = FloatRegister(0x0082, "forward (import) active energy", .kilowattHour)
    public static let reverseActiveEnergy = FloatRegister(0x0084, "reverse (export) active energy", .kilowattHour)
    public static let combinedReactiveEnergy = FloatRegister(0x0086, "total (combined) reactive energy", .kilovarHour)
    public static let forwardReactiveEnergy = FloatRegister(0x0088, "forward total reactive energy", .kilovarHour)
    public static let reverseReactiveEnergy = FloatRegister(0x008A, "reverse total reactive energy", .kilovarHour)
    /// Tariffs 1–4 = sharp, peak, flat, valley.
    public static let tariffActiveEnergy: [FloatRegister] = [
        FloatRegister(0x008C, "sharp (T1) active energy", .kilowattHour),
        FloatRegister(0x008E, "peak (T2) active energy", .kilowattHour),
        FloatRegister(0x0090, "flat (T3) active energy", .kilowattHour),
        FloatRegister(0x0092, "valley (T4) active energy", .kilowattHour),
    ]
    public static let tariffReactiveEnergy: [FloatRegister] = [
        FloatRegister(0x0094, "sharp (T1) reactive energy", .kilovarHour),
        FloatRegister(0x0096, "peak (T2) reactive energy", .kilovarHour),
        FloatRegister(0x0098, "flat (T3) reactive energy", .kilovarHour),
        FloatRegister(0x009A, "valley (T4) reactive energy", .kilovarHour),
    ]

    /// The ten history runs, in address order; each is 13 floats: this month, then previous 1 … 12.
    public static let historyRuns: [HistoryRun] = [
        HistoryRun(start: 0x009C, name: "combined active energy", unit: .kilowattHour, tariff: 0, active: true),
        HistoryRun(start: 0x00B6, name: "combined reactive energy", unit: .kilovarHour, tariff: 0, active: false),
        HistoryRun(start: 0x00D0, name: "sharp (T1) active energy", unit: .kilowattHour, tariff: 1, active: true),
        HistoryRun(start: 0x00EA, name: "sharp (T1) reactive energy", unit: .kilovarHour, tariff: 1, active: false),
        HistoryRun(start: 0x0104, name: "peak (T2) active energy", unit: .kilowattHour, tariff: 2, active: true),
        HistoryRun(start: 0x011E, name: "peak (T2) reactive energy", unit: .kilovarHour, tariff: 2, active: false),
        HistoryRun(start: 0x0138, name: "flat (T3) active energy", unit: .kilowattHour, tariff: 3, active: true),
        HistoryRun(start: 0x0152, name: "flat (T3) reactive energy", unit: .kilovarHour, tariff: 3, active: false),
        HistoryRun(start: 0x016C, name: "valley (T4) active energy", unit: .kilowattHour, tariff: 4, active: true),
        HistoryRun(start: 0x0186, name: "valley (T4) reactive energy", unit: .kilovarHour, tariff: 4, active: false),
    ]

    public static let allBasic: [FloatRegister] = [
        voltageA, voltageB, voltageC, currentA, currentB, currentC, voltageAB, voltageBC, voltageCA,
        activePowerA, activePowerB, activePowerC, activePowerTotal,
        reactivePowerA, reactivePowerB, reactivePowerC, reactivePowerTotal,
        apparentPowerA, apparentPowerB, apparentPowerC, apparentPowerTotal,
        powerFactorA, powerFactorB, powerFactorC, powerFactorTotal, frequency,
    ]
    public static let allEnergy: [FloatRegister] = [
        forwardActiveEnergyA, forwardActiveEnergyB, forwardActiveEnergyC,
        reverseActiveEnergyA, reverseActiveEnergyB, reverseActiveEnergyC,
        forwardReactiveEnergyA, forwardReactiveEnergyB, forwardReactiveEnergyC,
        reverseReactiveEnergyA, reverseReactiveEnergyB, reverseReactiveEnergyC,
        combinedActiveEnergy, forwardActiveEnergy, reverseActiveEnergy,
        combinedReactiveEnergy, forwardReactiveEnergy, reverseReactiveEnergy,
    ] + tariffActiveEnergy + tariffReactiveEnergy
    public static let allDemand: [FloatRegister] = [apparentDemandA, apparentDemandB, apparentDemandC]
}

/// One run of the monthly history: index 0 = this month, 1 … 12 = previous settlement days
/// (00:00 on the 1st of each month).
public struct HistoryRun: Sendable, Hashable {
    public let start: UInt16
    public let name: String
    public let unit: Unit
    /// 0 = all tariffs, 1…4 = sharp, peak, flat, valley.
    public let tariff: Int
    public let active: Bool

    public static let months = 13

    public func register(month: Int) -> FloatRegister {
        precondition(month >= 0 && month < Self.months)
        let label = month == 0 ? "this month" : "previous \(month)"
        return FloatRegister(start + UInt16(month * 2), "\(name), \(label)", unit)
    }
}
