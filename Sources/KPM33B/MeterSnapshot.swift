import ModbusCore

/// An immutable copy of everything the poll loop last read from the meter.
///
/// Readers (the HTTP API, the CLI, the status engine) take one with `MeterLink.snapshot()`; taking one never
/// waits on the RS485 bus. Each register group carries the Unix time (seconds) it was last read successfully;
/// a group that has never been read is `nil`.
public struct MeterSnapshot: Sendable {
    /// Increases by one for every published snapshot; equal generations mean equal contents.
    public var generation: UInt64 = 0
    public var health: LinkHealth = .starting
    /// Unix seconds when the poll loop last completed a cycle (successful or not).
    public var publishedAt: Int64 = 0

    /// Float values per block, indexed by `(address - block.start) / 2`.
    public var basic: [Float]? = nil
    public var energy: [Float]? = nil
    public var demand: [Float]? = nil
    public var history: [Float]? = nil
    public var parameters: MeterParameters? = nil
    public var relay: RelayState? = nil
    /// The relay is open because this board commanded it open (`relay_set`), and it has not been read closed since.
    public var relayOpenedByBoard = false

    /// Unix seconds each group was last read successfully (indexed by `RegisterGroup.rawValue`).
    public var readAt: [Int64?] = Array(repeating: nil, count: RegisterGroup.allCases.count)

    public var counters = LinkCounters()
    /// Values read from the meter outside their plausible range or not finite (`Plausibility`), one per value per
    /// read; never reset while the service runs. Shown as `implausible` in `link_errors`.
    public var implausibleValues: UInt64 = 0
    public var lastError: LinkError? = nil
    /// Wall time of the last complete poll cycle, microseconds.
    public var cycleMicroseconds: UInt32 = 0

    public init() {}

    public func readTime(_ group: RegisterGroup) -> Int64? { readAt[group.rawValue] }

    /// The value of one float register, or nil when its block has not been read yet or the value the meter sent is
    /// outside the register's plausible range (`Plausibility`): an implausible value is never served.
    public func value(_ register: FloatRegister) -> Float? {
        if case .plausible(let v) = reading(register) { return v }
        return nil
    }

    /// What the snapshot holds for one float register, implausible values included (for reasons and logs).
    public func reading(_ register: FloatRegister) -> RegisterReading {
        for block in KPM33BMap.floatBlocks where block.contains(register.address) {
            guard let values = floats(block.group) else { return .missing }
            let index = Int(register.address - block.start) / 2
            return index < values.count ? RegisterReading(values[index], at: register.address) : .missing
        }
        return .missing
    }

    /// Unix seconds at which `register` was read, or nil.
    public func readTime(of register: FloatRegister) -> Int64? {
        for block in KPM33BMap.floatBlocks where block.contains(register.address) {
            return readTime(block.group)
        }
        return nil
    }

    public func floats(_ group: RegisterGroup) -> [Float]? {
        switch group {
        case .basic: return basic
        case .energy: return energy
        case .demand: return demand
        case .history: return history
        case .parameters, .relay: return nil
        }
    }

    /// The meter's serial number, or nil before the parameters were read.
    public var serialNumber: String? { parameters?.serialNumber }
}

public enum LinkHealth: String, Sendable, Equatable {
    /// No cycle has completed yet.
    case starting
    /// The last cycle succeeded.
    case online
    /// Recent cycles failed, but the last good data is only a few cycles old.
    case stale
    /// The meter has not answered for longer than the stale limit: data must not be served as current.
    case offline
}

/// What the poll loop knows about the meter's configuration (parameter area 0x0000–0x0026).
public struct MeterParameters: Sendable, Equatable {
    /// The 13-character serial number as on the label (the display shows `Sn_` and the first five characters, e.g.
    /// `33Bxx`, then the last eight); upper-case hex of the 13 bytes when the meter stores something else.
    public var serialNumber: String
    public var modbusAddress: UInt16
    /// Raw 0x0002 word: low byte baud code, high byte format code.
    public var lineSettingsWord: UInt16
    /// Raw 0x001E word (0xDD11 local, 0xDD22 remote).
    public var controlModeWord: UInt16
    /// kW (0x0026), used by the meter to judge single-phase load.
    public var loadThresholdKW: UInt16
    /// Meter clock: year (two or four digits as the meter reports), month, day, hour, minute, second.
    public var clock: MeterClock
    /// As read; `plausiblePrepaidEnergyKWh` is what may be used.
    public var prepaidEnergyKWh: Float
    public var overdraftKWh: Float

    /// The remaining prepaid energy, or nil when the meter sent an implausible value (`Plausibility`).
    public var plausiblePrepaidEnergyKWh: Float? {
        Plausibility.isPlausible(prepaidEnergyKWh, at: KPM33BMap.prepaidEnergy) ? prepaidEnergyKWh : nil
    }
    /// Raw 0x001B/0x001C words (remote forced power on/off command and minutes).
    public var forcedPowerWords: (UInt16, UInt16)
    public var wirelessStatusWord: UInt16

    public init(serialNumber: String, modbusAddress: UInt16, lineSettingsWord: UInt16, controlModeWord: UInt16,
                loadThresholdKW: UInt16, clock: MeterClock, prepaidEnergyKWh: Float, overdraftKWh: Float,
                forcedPowerWords: (UInt16, UInt16), wirelessStatusWord: UInt16) {
        self.serialNumber = serialNumber
        self.modbusAddress = modbusAddress
        self.lineSettingsWord = lineSettingsWord
        self.controlModeWord = controlModeWord
        self.loadThresholdKW = loadThresholdKW
        self.clock = clock
        self.prepaidEnergyKWh = prepaidEnergyKWh
        self.overdraftKWh = overdraftKWh
        self.forcedPowerWords = forcedPowerWords
        self.wirelessStatusWord = wirelessStatusWord
    }

    public enum ControlMode: String, Sendable { case local, remote, unknown }

    public var controlMode: ControlMode {
        switch controlModeWord {
        case KPM33BMap.controlModeLocal: return .local
        case KPM33BMap.controlModeRemote: return .remote
        default: return .unknown
        }
    }

    public static func == (a: MeterParameters, b: MeterParameters) -> Bool {
        a.serialNumber == b.serialNumber && a.modbusAddress == b.modbusAddress
            && a.lineSettingsWord == b.lineSettingsWord && a.controlModeWord == b.controlModeWord
            && a.loadThresholdKW == b.loadThresholdKW && a.clock == b.clock
            && a.prepaidEnergyKWh.bitPattern == b.prepaidEnergyKWh.bitPattern
            && a.overdraftKWh.bitPattern == b.overdraftKWh.bitPattern
            && a.forcedPowerWords == b.forcedPowerWords && a.wirelessStatusWord == b.wirelessStatusWord
    }
}

public struct MeterClock: Sendable, Equatable {
    public var year: Int, month: Int, day: Int, hour: Int, minute: Int, second: Int
    public init(year: Int, month: Int, day: Int, hour: Int, minute: Int, second: Int) {
        (self.year, self.month, self.day, self.hour, self.minute, self.second) = (year, month, day, hour, minute, second)
    }
    /// `2026-11-21 10:04:05` (two-digit years are shown as 20yy).
    public var text: String {
        func two(_ v: Int) -> String { v < 10 ? "0\(v)" : "\(v)" }
        let y = year < 100 ? 2000 + year : year
        return "\(y)-\(two(month))-\(two(day)) \(two(hour)):\(two(minute)):\(two(second))"
    }
}

/// FC01 reply data byte for relay 1: bit0/1/2 = phase A/B/C load relay closed.
///
/// The KPM33B has one load-control relay (DO1) switching all phases; the manual's example reads one coil and
/// gets all three phase bits back. A standard slave answers a one-coil read with bit0 only, so the relay state is
/// taken from bit0 and the other bits are shown for information.
///
/// The manual contradicts itself: its bit table says 0x07 for "all three closed", its worked FC01 example
/// (`01 01 01 01 90 48`) carries 0x01. Per-phase bits are therefore believed only when they agree with the relay
/// (0x07 closed, 0x00 open); any other byte (0x01) is bit 0 = relay, per-phase status not reported.
public struct RelayState: Sendable, Equatable {
    public var bits: UInt8
    public init(bits: UInt8) { self.bits = bits }
    /// Relay 1 closed: the meter supplies the load.
    public var closed: Bool { bits & 1 != 0 }
    /// Whether the reply's phase bits are consistent with the relay (0x07 or 0x00).
    public var phasesReported: Bool { bits & 0x07 == 0x07 || bits & 0x07 == 0 }
    /// Per-phase closed state A/B/C, or nil when this meter does not report it.
    public var phases: (a: Bool, b: Bool, c: Bool)? {
        phasesReported ? (bits & 1 != 0, bits & 2 != 0, bits & 4 != 0) : nil
    }
    public static let phasesNotReported = "per-phase status is not reported by this meter"
}

/// Error counters of the RS485 link, one per error class. Never reset while the service runs.
public typealias LinkCounters = ModbusStatistics

/// The last error the link saw, in words an installer can act on.
public struct LinkError: Sendable, Equatable {
    public enum Kind: String, Sendable {
        case timeout, crc, exception, wrongSlave = "wrong-slave", wrongFunction = "wrong-function"
        case malformed, io
    }
    public var kind: Kind
    public var message: String
    /// Unix seconds.
    public var at: Int64
    public init(kind: Kind, message: String, at: Int64) {
        self.kind = kind
        self.message = message
        self.at = at
    }
}

/// What the service layer needs from the meter side. The real implementation is the poll loop; tests use fakes.
public protocol MeterLink: AnyObject, Sendable {
    /// The latest published snapshot. Never blocks on the bus.
    func snapshot() -> MeterSnapshot
    /// Queues a relay command for the poll loop and waits (bounded) for its result.
    /// Returns the relay state read back after the write.
    func setRelay(closed: Bool) async throws -> RelayState
    /// Line settings the link runs with, for display (`9600 8E1, address 1`).
    var lineDescription: String { get }
    /// The meter's Modbus address on its bus, when the link knows it (issue 17: several meters per bus).
    var meterAddress: UInt8? { get }
}

extension MeterLink {
    public var meterAddress: UInt8? { nil }
}
