/// Derives CalinMeter's AMI operating status from what the KPM33B and the board know.
///
/// A plain value type with no clock and no I/O: the caller passes each snapshot's inputs with the time it was taken
/// (`now`, seconds on any monotonic scale), so tests drive synthetic time.
///
/// The guide's code 87 / AMI 1001–1025 are reasons the relay is *disconnected*. Main status:
/// - relay closed (all phases) → 1000, whatever the load;
/// - relay open, and the running service (its API's relay_set) commanded it open, or the meter reports remote
///   forced power-off (0x001B) → 1007;
/// - relay open, prepaid mode on and the prepaid energy (0x000E) ≤ 0 kWh → 1001;
/// - relay open, and the load read just before the opening was above the meter's load threshold (0x0026, kW per
///   phase) → 1003;
/// - otherwise no code: "relay open, reason unknown" with the action "read the meter's display" — a guessed code
///   would send field staff the wrong way.
/// Every main status carries `because`, the reasoning in words.
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
    /// Phase powers of the last sample with the relay closed; frozen while the relay is open, so it is the load
    /// just before the opening. Nil until a closed relay was seen (since start or since the meter went offline).
    private var loadBeforeOpening: ThreePhase<Double>?

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
        let judged = Self.mainStatus(for: inputs, loadBeforeOpening: loadBeforeOpening)
        if inputs.relayClosed.map({ $0.a && $0.b && $0.c }) == true { loadBeforeOpening = inputs.activePowers }
        return OperatingStatus(main: judged.entry, because: judged.because, relayOpen: judged.relayOpen,
                               alerts: alerts)
    }

    /// Forgets all alerts and their timers.
    public mutating func reset() {
        trackers = [:]
        raisedJudgements = [:]
        loadBeforeOpening = nil
        for condition in Condition.allCases {
            trackers[condition] = DebouncedCondition(minimumDuration: config.minimumDuration)
        }
    }

    /// Whether `condition`'s alert is raised right now.
    public func isRaised(_ condition: Condition) -> Bool { trackers[condition]?.isRaised ?? false }

    // MARK: - Main status

    /// The main status with its reasoning (see the type's documentation). `loadBeforeOpening` is the phase
    /// powers of the last sample taken with the relay closed, or nil when none was seen.
    public static func mainStatus(for inputs: StatusInputs, loadBeforeOpening: ThreePhase<Double>? = nil)
        -> (entry: StatusCodeEntry?, because: String, relayOpen: Bool) {
        guard let relay = inputs.relayClosed else {
            return (nil, "relay state not read", false)
        }
        if relay.a && relay.b && relay.c {
            return (StatusCodes.ami(1000), "relay closed: the meter supplies the load", false)
        }
        let open = Phase.allCases.filter { !relay[$0] }.map(\.rawValue).joined(separator: ",")
        let opened = "relay open (phase \(open))"
        if inputs.relayOpenedByBoard {
            return (StatusCodes.ami(1007), "\(opened) after this board's relay_set command opened it", true)
        }
        if inputs.forcedPower == .forcedOff {
            return (StatusCodes.ami(1007), "\(opened); the meter reports remote forced power-off (0x001B)", true)
        }
        if inputs.prepaidMode, let energy = inputs.prepaidEnergyKWh, energy.isFinite, energy <= 0 {
            return (StatusCodes.ami(1001), "\(opened); prepaid mode and the prepaid energy is \(fixed(energy, 2)) kWh",
                    true)
        }
        if inputs.loadThresholdKW > 0, let load = loadBeforeOpening {
            let limitW = inputs.loadThresholdKW * 1000
            // Only import counts as load; the meter judges each phase against the threshold.
            if let phase = Phase.allCases.filter({ load[$0].isFinite && load[$0] > limitW })
                .max(by: { load[$0] < load[$1] }) {
                return (StatusCodes.ami(1003),
                        "\(opened); before the opening phase \(phase.rawValue) drew \(fixed(load[phase], 0)) W, above "
                            + "the meter's load threshold \(fixed(inputs.loadThresholdKW, 1)) kW (0x0026)", true)
            }
        }
        return (nil, "\(opened), reason unknown: not opened by this board, no forced power-off, "
                    + (loadBeforeOpening == nil ? "load before the opening not seen" : "load before the opening within the threshold"),
                true)
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
        /// Phases judged reversed at these limits (empty when none).
        func reversed(meaningful: Double, ratio: Double, noise: Double) -> [Phase] {
            var result = Set(config.importOnlyPhases.filter { powers[$0] < -noise })
            let importing = Phase.allCases.filter { powers[$0] >= meaningful }
            let exporting = Phase.allCases.filter { powers[$0] <= -meaningful }
            let disagreeing = importing.contains { i in
                exporting.contains { e in
                    let small = min(powers[i], -powers[e]), large = max(powers[i], -powers[e])
                    return small >= ratio * large
                }
            }
            if disagreeing {
                // The minority sign is the one wired the wrong way round; on a tie, the exporting phases.
                result.formUnion(importing.count < exporting.count ? importing : exporting)
            }
            return Phase.allCases.filter { result.contains($0) }
        }
        let h = config.reversePowerHysteresisW
        let raised = reversed(meaningful: config.reverseMeaningfulLoadW, ratio: config.reverseComparableRatio,
                              noise: config.reversePowerNoiseFloorW)
        let notCleared = reversed(meaningful: max(0, config.reverseMeaningfulLoadW - h),
                                  ratio: max(0, config.reverseComparableRatio - 0.1),
                                  noise: max(0, config.reversePowerNoiseFloorW - h))
        let sample: DebouncedCondition.Sample = !raised.isEmpty ? .beyond : notCleared.isEmpty ? .within : .inBand
        let phases = raised.isEmpty ? notCleared : raised
        let why = phases.contains(where: config.importOnlyPhases.contains)
            ? " (phase wired for import only)" : phases.isEmpty ? "" : " (phases disagree in sign: swapped CT or phase?)"
        return Judgement(sample: sample, phases: phases,
                         detail: describe(powers, unit: "W", phases: Phase.allCases) + why)
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
