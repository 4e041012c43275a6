/// Derives CalinMeter's AMI operating status from what the KPM33B reports.
///
/// A plain value type with no clock and no I/O: the caller passes each snapshot's inputs with the time it was taken
/// (`now`, seconds on any monotonic scale), so tests drive synthetic time.
///
/// Main status, highest priority first:
/// 1. 1007 Remote Disconnect: the meter reports forced power-off, or a relay phase is open while the meter is in
///    remote control mode (only the backend/HES switches it then). A relay that reads all-closed overrides a forced-off
///    word: the coils are what actually supply the load, and reporting a disconnect while supplying would be wrong.
/// 2. 1001 No Credit (prepaid only): prepaid mode is on and the remaining prepaid energy is ≤ 0 kWh. Outranks the
///    load checks because an exhausted credit is what the meter will act on next, whatever the load.
/// 3. 1003 Over Power: relay closed and some phase's active power is above the meter's load power threshold
///    (0x0026, kW, judged per phase like the meter does). A threshold of 0 means not set: never over power. This
///    mirrors the meter's own instantaneous judgement; its load-control duration (0x001D) is what delays the trip,
///    so no extra debouncing is added here.
/// 4. 1000 Relay Closed: all three relay phases closed and none of the above.
/// Anything else (relay open in local or unknown control mode without a forced-off, or relay state unknown) has no
/// main status: the KPM33B does not tell us why, and a guessed reason would send field staff the wrong way.
///
/// Measurement alerts (1011, 1012, 1013, 1016, 1021, 1023) are listed separately and debounced by
/// `DebouncedCondition`: they are raised only after their condition held for `config.minimumDuration`, and cleared
/// only after it has been back inside the hysteresis band for as long.
public struct StatusEngine: Sendable {
    /// The measurement conditions the engine watches, by AMI code.
    public enum Condition: Int, Sendable, CaseIterable, Hashable {
        case overVoltage = 1011
        case underVoltage = 1012
        case currentReverse = 1013
        case currentImbalance = 1016
        case voltageImbalance = 1021
        case lowPowerFactor = 1023
    }

    /// A sample classified against one condition's limits, with what to tell field staff about it.
    public struct Judgement: Sendable, Equatable {
        public var sample: DebouncedCondition.Sample
        /// Phases not back inside the clear limit.
        public var phases: [Phase]
        public var detail: String
    }

    public var config: StatusEngineConfig {
        didSet {
            for condition in Condition.allCases { trackers[condition]?.minimumDuration = config.minimumDuration }
        }
    }

    private var trackers: [Condition: DebouncedCondition] = [:]
    /// What a raised alert was about, kept while it waits to clear (the current reading is then back to normal
    /// and no longer names the phases).
    private var raisedJudgements: [Condition: Judgement] = [:]

    public init(config: StatusEngineConfig = StatusEngineConfig()) {
        self.config = config
        reset()
    }

    /// Feeds one snapshot's inputs taken at `now`. `nil` inputs mean the meter is offline: the engine returns no
    /// status (a stale one would look current) and forgets all alert timers, so alerts start from scratch when the
    /// meter comes back.
    public mutating func update(_ inputs: StatusInputs?, now: Double) -> OperatingStatus? {
        guard let inputs else {
            reset()
            return nil
        }
        var alerts: [StatusAlert] = []
        for condition in Condition.allCases {
            let judgement = Self.judge(condition, inputs: inputs, config: config)
            var tracker = trackers[condition] ?? DebouncedCondition(minimumDuration: config.minimumDuration)
            tracker.update(judgement.sample, now: now)
            trackers[condition] = tracker
            guard let since = tracker.raisedAt, let entry = StatusCodes.ami(condition.rawValue) else {
                raisedJudgements[condition] = nil
                continue
            }
            if judgement.sample != .within { raisedJudgements[condition] = judgement }
            let shown = raisedJudgements[condition] ?? judgement
            let detail = judgement.sample == .within ? "was \(shown.detail); back within limits, clearing"
                                                     : judgement.detail
            alerts.append(StatusAlert(entry: entry, phases: shown.phases, since: since, detail: detail))
        }
        return OperatingStatus(main: Self.mainStatus(for: inputs), alerts: alerts)
    }

    /// Forgets all alerts and their timers.
    public mutating func reset() {
        trackers = [:]
        raisedJudgements = [:]
        for condition in Condition.allCases {
            trackers[condition] = DebouncedCondition(minimumDuration: config.minimumDuration)
        }
    }

    /// Whether `condition`'s alert is raised right now.
    public func isRaised(_ condition: Condition) -> Bool { trackers[condition]?.isRaised ?? false }

    // MARK: - Main status

    /// The main operating status for one set of inputs (see the type's documentation for the priority), or nil
    /// when the KPM33B does not say why its relay is open.
    public static func mainStatus(for inputs: StatusInputs) -> StatusCodeEntry? {
        let relayAllClosed: Bool? = inputs.relayClosed.map { $0.a && $0.b && $0.c }

        if relayAllClosed != true {
            if inputs.forcedPower == .forcedOff { return StatusCodes.ami(1007) }
            if relayAllClosed == false && inputs.controlMode == .remote { return StatusCodes.ami(1007) }
        }
        if inputs.prepaidMode, let energy = inputs.prepaidEnergyKWh, energy.isFinite, energy <= 0 {
            return StatusCodes.ami(1001)
        }
        guard relayAllClosed == true else { return nil }
        if inputs.loadThresholdKW > 0, let powers = inputs.activePowers {
            // Only import counts as load; export is the reverse-current alert's business.
            let limitW = inputs.loadThresholdKW * 1000
            if powers.values.contains(where: { $0.isFinite && $0 > limitW }) { return StatusCodes.ami(1003) }
        }
        return StatusCodes.ami(1000)
    }

    // MARK: - Measurement conditions

    /// Classifies one sample against `condition`'s raise and clear limits.
    public static func judge(_ condition: Condition, inputs: StatusInputs,
                             config: StatusEngineConfig) -> Judgement {
        switch condition {
        case .overVoltage: return judgeOverVoltage(inputs.voltages, config)
        case .underVoltage: return judgeUnderVoltage(inputs.voltages, config)
        case .currentReverse: return judgeReverse(inputs.activePowers, config)
        case .currentImbalance: return judgeCurrentImbalance(inputs.currents, config)
        case .voltageImbalance: return judgeVoltageImbalance(inputs.voltages, config)
        case .lowPowerFactor: return judgeLowPowerFactor(inputs, config)
        }
    }

    private static let unknown = Judgement(sample: .unknown, phases: [], detail: "not measured")

    private static func judgeOverVoltage(_ voltages: ThreePhase<Double>?, _ config: StatusEngineConfig) -> Judgement {
        guard let voltages, allFinite(voltages) else { return unknown }
        let raise = config.nominalVoltage * (1 + config.overVoltagePercent / 100)
        let clear = config.nominalVoltage * (1 + (config.overVoltagePercent - config.voltageHysteresisPercent) / 100)
        let phases = Phase.allCases.filter { voltages[$0] > clear }
        let sample: DebouncedCondition.Sample = Phase.allCases.contains { voltages[$0] > raise } ? .beyond
            : phases.isEmpty ? .within : .inBand
        return Judgement(sample: sample, phases: phases,
                         detail: describe(voltages, unit: "V", phases: phases) + " (limit \(fixed(raise, 1)) V)")
    }

    private static func judgeUnderVoltage(_ voltages: ThreePhase<Double>?, _ config: StatusEngineConfig) -> Judgement {
        guard let voltages, allFinite(voltages) else { return unknown }
        let raise = config.nominalVoltage * (1 - config.underVoltagePercent / 100)
        let clear = config.nominalVoltage * (1 - (config.underVoltagePercent - config.voltageHysteresisPercent) / 100)
        let phases = Phase.allCases.filter { voltages[$0] < clear }
        let sample: DebouncedCondition.Sample = Phase.allCases.contains { voltages[$0] < raise } ? .beyond
            : phases.isEmpty ? .within : .inBand
        return Judgement(sample: sample, phases: phases,
                         detail: describe(voltages, unit: "V", phases: phases) + " (limit \(fixed(raise, 1)) V)")
    }

    private static func judgeReverse(_ powers: ThreePhase<Double>?, _ config: StatusEngineConfig) -> Judgement {
        guard let powers, allFinite(powers) else { return unknown }
        // Export on a phase wired for export (solar) is normal; only phases wired positive are judged.
        let judged = Phase.allCases.filter { config.wiredPositive[$0] }
        let raise = -config.reversePowerNoiseFloorW
        let clear = -max(0, config.reversePowerNoiseFloorW - config.reversePowerHysteresisW)
        let phases = judged.filter { powers[$0] < clear }
        let sample: DebouncedCondition.Sample = judged.contains { powers[$0] < raise } ? .beyond
            : phases.isEmpty ? .within : .inBand
        return Judgement(sample: sample, phases: phases,
                         detail: describe(powers, unit: "W", phases: phases) + " (phase wired positive, export not expected)")
    }

    private static func judgeCurrentImbalance(_ currents: ThreePhase<Double>?,
                                              _ config: StatusEngineConfig) -> Judgement {
        guard let currents, allFinite(currents) else { return unknown }
        let magnitudes = currents.values.map { abs($0) }
        let largest = magnitudes.max() ?? 0
        let text = "currents " + Phase.allCases.map { "\($0.rawValue) \(fixed(abs(currents[$0]), 1)) A" }
            .joined(separator: ", ")
        // At light load a single appliance is a 100 % imbalance that means nothing: judged only above the minimum.
        guard largest >= config.currentImbalanceMinimumA else {
            return Judgement(sample: .within, phases: [], detail: text + " (below \(fixed(config.currentImbalanceMinimumA, 1)) A, not judged)")
        }
        let imbalance = (largest - (magnitudes.min() ?? 0)) / largest * 100
        return classify(imbalance, raise: config.currentImbalancePercent,
                        hysteresis: config.currentImbalanceHysteresisPercent, phases: [],
                        detail: "imbalance \(fixed(imbalance, 1)) %, \(text) (limit \(fixed(config.currentImbalancePercent, 1)) %)")
    }

    private static func judgeVoltageImbalance(_ voltages: ThreePhase<Double>?,
                                              _ config: StatusEngineConfig) -> Judgement {
        guard let voltages, allFinite(voltages) else { return unknown }
        let mean = (voltages.a + voltages.b + voltages.c) / 3
        guard mean >= config.voltageImbalanceMinimumV else {
            return Judgement(sample: .within, phases: [], detail: "mean voltage \(fixed(mean, 1)) V, not judged")
        }
        let deviation = ThreePhase(abs(voltages.a - mean), abs(voltages.b - mean), abs(voltages.c - mean))
        let imbalance = (deviation.values.max() ?? 0) / mean * 100
        let clearV = mean * (config.voltageImbalancePercent - config.voltageImbalanceHysteresisPercent) / 100
        let phases = Phase.allCases.filter { deviation[$0] > clearV }
        return classify(imbalance, raise: config.voltageImbalancePercent,
                        hysteresis: config.voltageImbalanceHysteresisPercent, phases: phases,
                        detail: "imbalance \(fixed(imbalance, 1)) % from mean \(fixed(mean, 1)) V, "
                            + describe(voltages, unit: "V", phases: Phase.allCases)
                            + " (limit \(fixed(config.voltageImbalancePercent, 1)) %)")
    }

    private static func judgeLowPowerFactor(_ inputs: StatusInputs, _ config: StatusEngineConfig) -> Judgement {
        guard let pf = inputs.totalPowerFactor, pf.isFinite,
              let voltages = inputs.voltages, allFinite(voltages),
              let currents = inputs.currents, allFinite(currents) else { return unknown }
        let phaseLoad = ThreePhase(voltages.a * abs(currents.a), voltages.b * abs(currents.b),
                                   voltages.c * abs(currents.c))
        let load = phaseLoad.a + phaseLoad.b + phaseLoad.c
        // At no load the meter's PF is noise: judged only above the minimum load.
        guard load >= config.lowPowerFactorMinimumLoadVA else {
            return Judgement(sample: .within, phases: [],
                             detail: "load \(fixed(load, 0)) VA, below \(fixed(config.lowPowerFactorMinimumLoadVA, 0)) VA, not judged")
        }
        let clear = config.lowPowerFactor + config.powerFactorHysteresis
        // The per-phase PFs only say where to look: phases carrying their share of the minimum load with a low PF.
        var phases: [Phase] = []
        if let phasePFs = inputs.powerFactors {
            phases = Phase.allCases.filter {
                phasePFs[$0].isFinite && abs(phasePFs[$0]) < clear
                    && phaseLoad[$0] >= config.lowPowerFactorMinimumLoadVA / 3
            }
        }
        let magnitude = abs(pf)
        let sample: DebouncedCondition.Sample = magnitude < config.lowPowerFactor ? .beyond
            : magnitude >= clear ? .within : .inBand
        return Judgement(sample: sample, phases: phases,
                         detail: "total PF \(fixed(pf, 2)) at \(fixed(load, 0)) VA (limit \(fixed(config.lowPowerFactor, 2)))")
    }

    /// For "higher is worse" percentages: beyond above `raise`, within at or below `raise − hysteresis`.
    private static func classify(_ value: Double, raise: Double, hysteresis: Double, phases: [Phase],
                                 detail: String) -> Judgement {
        let sample: DebouncedCondition.Sample = value > raise ? .beyond : value <= raise - hysteresis ? .within : .inBand
        return Judgement(sample: sample, phases: phases, detail: detail)
    }

    private static func allFinite(_ values: ThreePhase<Double>) -> Bool { values.values.allSatisfy { $0.isFinite } }

    /// "phase B 262.4 V" for the phases involved, or all three when none stands out.
    private static func describe(_ values: ThreePhase<Double>, unit: String, phases: [Phase]) -> String {
        let shown = phases.isEmpty ? Phase.allCases : phases
        return shown.map { "phase \($0.rawValue) \(fixed(values[$0], 1)) \(unit)" }.joined(separator: ", ")
    }
}

/// Fixed-point text without Foundation's `String(format:)`: 262.43 with 1 digit → "262.4". Total over every
/// Double: a magnitude whose scaled value does not fit an Int (a meter glitch of 1e20 V, 3e38 A) is printed as Swift
/// prints a Double ("1e+20") instead of trapping in the integer conversion.
func fixed(_ value: Double, _ digits: Int) -> String {
    let digits = min(max(digits, 0), 9)
    var scale = 1
    for _ in 0..<digits { scale *= 10 }
    let magnitude = (abs(value) * Double(scale)).rounded()
    // 2^62: well inside Int, and every Double above it is an integer anyway.
    guard value.isFinite, magnitude < 4.6e18 else { return String(value) }
    let scaled = Int(magnitude)
    let whole = String(scaled / scale)
    let sign = value < 0 && scaled != 0 ? "-" : ""
    guard digits > 0 else { return sign + whole }
    let fraction = String(scaled % scale)
    return sign + whole + "." + String(repeating: "0", count: digits - fraction.count) + fraction
}
