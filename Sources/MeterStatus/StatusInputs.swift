/// One phase of the three-phase supply.
public enum Phase: String, Sendable, CaseIterable, Hashable {
    case a = "A", b = "B", c = "C"
}

/// One value per phase, A/B/C.
public struct ThreePhase<Value> {
    public var a: Value
    public var b: Value
    public var c: Value

    public init(_ a: Value, _ b: Value, _ c: Value) {
        (self.a, self.b, self.c) = (a, b, c)
    }

    /// The same value on all three phases.
    public init(all value: Value) {
        (a, b, c) = (value, value, value)
    }

    public subscript(phase: Phase) -> Value {
        get {
            switch phase {
            case .a: return a
            case .b: return b
            case .c: return c
            }
        }
        set {
            switch phase {
            case .a: a = newValue
            case .b: b = newValue
            case .c: c = newValue
            }
        }
    }

    public var values: [Value] { [a, b, c] }
}

extension ThreePhase: Sendable where Value: Sendable {}
extension ThreePhase: Equatable where Value: Equatable {}
extension ThreePhase: Hashable where Value: Hashable {}

/// What the status engine needs from one KPM33B snapshot. The service layer fills it; anything it could not read
/// is nil or `.unknown`, and the engine then says nothing about what depends on it.
public struct StatusInputs: Sendable, Equatable {
    /// 0x001E: who may switch the relay.
    public enum ControlMode: String, Sendable, Hashable {
        case local, remote, unknown
    }

    /// 0x001B remote forced power on/off. The raw command words are ambiguous in the manual, so the caller decides
    /// (for example from the front panel's n_P / f-b / f-P indication) and passes `.unknown` when it cannot.
    public enum ForcedPower: String, Sendable, Hashable {
        case forcedOff = "forced-off"
        case forcedOn = "forced-on"
        case notForced = "not-forced"
        case unknown
    }

    /// Coil 0x0001, bit per phase, true = closed (supplying); nil when the coils were not read.
    public var relayClosed: ThreePhase<Bool>?
    public var controlMode: ControlMode
    public var forcedPower: ForcedPower
    /// 0x0026, kW, "judge single-phase load"; 0 means not set (or unknown), and then the engine never reports
    /// over power.
    public var loadThresholdKW: Double
    /// Phase voltages, V.
    public var voltages: ThreePhase<Double>?
    /// Phase currents, A.
    public var currents: ThreePhase<Double>?
    /// Phase active powers, W, signed: the KPM33B is bidirectional and reports export as negative.
    public var activePowers: ThreePhase<Double>?
    /// Phase power factors (signed as the meter reports them).
    public var powerFactors: ThreePhase<Double>?
    /// Total power factor (0x0060).
    public var totalPowerFactor: Double?
    /// Remaining prepaid energy, kWh (0x000E).
    public var prepaidEnergyKWh: Double?
    /// The relay is open because the running service (its API's `relay_set`) commanded it open, and it has not been
    /// seen closed since.
    public var relayOpenedByBoard: Bool
    /// Whether this board sells energy prepaid. Off by default: postpaid teams ignore credit codes.
    public var prepaidMode: Bool

    public init(relayClosed: ThreePhase<Bool>? = nil, controlMode: ControlMode = .unknown,
                forcedPower: ForcedPower = .unknown, loadThresholdKW: Double = 0,
                voltages: ThreePhase<Double>? = nil, currents: ThreePhase<Double>? = nil,
                activePowers: ThreePhase<Double>? = nil, powerFactors: ThreePhase<Double>? = nil,
                totalPowerFactor: Double? = nil, prepaidEnergyKWh: Double? = nil, prepaidMode: Bool = false,
                relayOpenedByBoard: Bool = false) {
        self.relayOpenedByBoard = relayOpenedByBoard
        self.relayClosed = relayClosed
        self.controlMode = controlMode
        self.forcedPower = forcedPower
        self.loadThresholdKW = loadThresholdKW
        self.voltages = voltages
        self.currents = currents
        self.activePowers = activePowers
        self.powerFactors = powerFactors
        self.totalPowerFactor = totalPowerFactor
        self.prepaidEnergyKWh = prepaidEnergyKWh
        self.prepaidMode = prepaidMode
    }
}
