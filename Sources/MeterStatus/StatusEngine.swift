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
            for condition in Condition.allCases { trackers[condition]?.debounce.minimumDuration = config.minimumDuration }
        }
    }

    /// One condition's debouncing, and what its raised alert was about, kept while it waits to clear (the current
    /// reading is then back to normal and no longer names the phases): the inputs and configuration of its last
    /// sample outside the limits, judged again when the status is asked for.
    private struct Tracker {
        var debounce: DebouncedCondition
        var raisedInputs: StatusInputs? = nil
        var raisedConfig: StatusEngineConfig? = nil

        mutating func advance(_ sample: DebouncedCondition.Sample, now: Double, inputs: StatusInputs,
                              config: StatusEngineConfig, listed: Bool) {
            debounce.update(sample, now: now)
            if debounce.raisedAt != nil, listed {
                if sample != .within {
                    raisedInputs = inputs
                    raisedConfig = config
                }
            } else if raisedInputs != nil {
                raisedInputs = nil
                raisedConfig = nil
            }
        }
    }

    private var trackers: [Condition: Tracker] = [:]
    /// Phase powers of the last sample with the relay closed; frozen while the relay is open, so it is the load
    /// just before the opening. Nil until a closed relay was seen (since start or since the meter went offline).
    private var loadBeforeOpening: ThreePhase<Double>?
    /// The last sample fed (nil: offline) and `loadBeforeOpening` as it was before that sample.
    private var lastInputs: StatusInputs?
    private var lastLoadBeforeOpening: ThreePhase<Double>?

    public init(config: StatusEngineConfig = StatusEngineConfig()) {
        self.config = config
        for condition in Condition.allCases {
            trackers[condition] = Tracker(debounce: DebouncedCondition(minimumDuration: config.minimumDuration))
        }
    }

    /// Feeds one snapshot's inputs taken at `now` and returns the status they give (`advance`, then `status`).
    /// `nil` inputs mean the meter is offline: the engine returns no status (a stale one would look current) and
    /// forgets all alert timers, so alerts start from scratch when the meter comes back.
    public mutating func update(_ inputs: StatusInputs?, now: Double) -> OperatingStatus? {
        advance(inputs, now: now)
        return status()
    }

    /// Feeds one snapshot's inputs taken at `now` to the alert timers, without making the status's words.
    /// Issue 18: nothing here allocates, so the service can feed every snapshot while nobody asks; `status()`
    /// makes the words when someone does.
    public mutating func advance(_ inputs: StatusInputs?, now: Double) {
        guard let inputs else {
            reset()
            lastInputs = nil
            return
        }
        for index in Self.conditions.indices {
            let condition = Self.conditions[index]
            let sample = Self.sample(condition, inputs: inputs, config: config)
            // Not `trackers[condition, default: …]`: its autoclosure is a new closure context at every call.
            var tracker = trackers[condition]
                ?? Tracker(debounce: DebouncedCondition(minimumDuration: config.minimumDuration))
            tracker.advance(sample, now: now, inputs: inputs, config: config, listed: Self.listed[index])
            trackers[condition] = tracker
        }
        lastInputs = inputs
        lastLoadBeforeOpening = loadBeforeOpening
        if inputs.relayClosed.map({ $0.a && $0.b && $0.c }) == true { loadBeforeOpening = inputs.activePowers }
    }

    /// The status of the last sample `advance` was fed; nil when it was offline (or nothing was fed yet).
    public func status() -> OperatingStatus? {
        guard let inputs = lastInputs else { return nil }
        var alerts: [StatusAlert] = []
        for condition in Self.conditions {
            guard let tracker = trackers[condition], let since = tracker.debounce.raisedAt,
                  let entry = StatusCodes.ami(condition.rawValue) else { continue }
            let judgement = Self.judge(condition, inputs: inputs, config: config)
            var shown = judgement
            if let raisedInputs = tracker.raisedInputs, let raisedConfig = tracker.raisedConfig {
                shown = Self.judge(condition, inputs: raisedInputs, config: raisedConfig)
            }
            let detail = judgement.sample == .within ? "was \(shown.detail); back within limits, clearing"
                                                     : judgement.detail
            alerts.append(StatusAlert(entry: entry, phases: shown.phases, since: since, detail: detail))
        }
        let judged = Self.mainStatus(for: inputs, loadBeforeOpening: lastLoadBeforeOpening)
        return OperatingStatus(main: judged.entry, because: judged.because, relayOpen: judged.relayOpen,
                               alerts: alerts)
    }

    /// `Condition.allCases` (made once: the synthesized property builds a new array at every use) and whether the
    /// guide lists each one's AMI code.
    private static let conditions = Condition.allCases
    private static let listed = conditions.map { StatusCodes.ami($0.rawValue) != nil }

    /// Forgets all alerts and their timers.
    public mutating func reset() {
        for condition in Self.conditions {
            trackers[condition] = Tracker(debounce: DebouncedCondition(minimumDuration: config.minimumDuration))
        }
        loadBeforeOpening = nil
    }

    /// Whether `condition`'s alert is raised right now.
    public func isRaised(_ condition: Condition) -> Bool { trackers[condition]?.debounce.isRaised ?? false }

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

    /// `judge(condition, inputs:, config:).sample` without the words: no allocation (issue 18: the engine runs once
    /// a second for nobody). Shares its arithmetic with the `judge` functions; `StatusEngineSampleTests` checks
    /// both agree over random inputs.
    public static func sample(_ condition: Condition, inputs: StatusInputs,
                              config: StatusEngineConfig) -> DebouncedCondition.Sample {
        switch condition {
        case .overVoltage, .underVoltage:
            guard let v = inputs.voltages, allFinite(v) else { return .unknown }
            let over = condition == .overVoltage
            let (raise, clear) = over ? overVoltageLimits(config) : underVoltageLimits(config)
            func past(_ x: Double, _ limit: Double) -> Bool { over ? x > limit : x < limit }
            if past(v.a, raise) || past(v.b, raise) || past(v.c, raise) { return .beyond }
            return past(v.a, clear) || past(v.b, clear) || past(v.c, clear) ? .inBand : .within
        case .currentReverse:
            guard let powers = inputs.activePowers, allFinite(powers) else { return .unknown }
            let (raised, notCleared) = reversedMasks(powers, config)
            return raised != 0 ? .beyond : notCleared == 0 ? .within : .inBand
        case .currentImbalance:
            guard let currents = inputs.currents, allFinite(currents) else { return .unknown }
            let (largest, imbalance) = currentImbalance(currents)
            guard largest >= config.currentImbalanceMinimumA else { return .within }
            return classify(imbalance, raise: config.currentImbalancePercent,
                            hysteresis: config.currentImbalanceHysteresisPercent)
        case .voltageImbalance:
            guard let voltages = inputs.voltages, allFinite(voltages) else { return .unknown }
            let (mean, _, imbalance) = voltageImbalance(voltages)
            guard mean >= config.voltageImbalanceMinimumV else { return .within }
            return classify(imbalance, raise: config.voltageImbalancePercent,
                            hysteresis: config.voltageImbalanceHysteresisPercent)
        case .lowPowerFactor:
            guard let pf = inputs.totalPowerFactor, pf.isFinite,
                  let voltages = inputs.voltages, allFinite(voltages),
                  let currents = inputs.currents, allFinite(currents) else { return .unknown }
            let phaseLoad = phaseLoads(voltages, currents)
            guard phaseLoad.a + phaseLoad.b + phaseLoad.c >= config.lowPowerFactorMinimumLoadVA else { return .within }
            return powerFactorSample(pf, config)
        }
    }

    private static func overVoltageLimits(_ config: StatusEngineConfig) -> (raise: Double, clear: Double) {
        (config.nominalVoltage * (1 + config.overVoltagePercent / 100),
         config.nominalVoltage * (1 + (config.overVoltagePercent - config.voltageHysteresisPercent) / 100))
    }

    private static func underVoltageLimits(_ config: StatusEngineConfig) -> (raise: Double, clear: Double) {
        (config.nominalVoltage * (1 - config.underVoltagePercent / 100),
         config.nominalVoltage * (1 - (config.underVoltagePercent - config.voltageHysteresisPercent) / 100))
    }

    /// Phases judged reversed (bit 0 A, 1 B, 2 C) at the raise limits and at the clear limits.
    private static func reversedMasks(_ powers: ThreePhase<Double>, _ config: StatusEngineConfig)
        -> (raised: UInt8, notCleared: UInt8) {
        func reversed(meaningful: Double, ratio: Double, noise: Double) -> UInt8 {
            var result: UInt8 = 0, importing: UInt8 = 0, exporting: UInt8 = 0
            for i in 0..<3 {
                let bit = UInt8(1) << i, p = powers[phase(i)]
                if p < -noise && config.importOnlyPhases.contains(phase(i)) { result |= bit }
                if p >= meaningful { importing |= bit }
                if p <= -meaningful { exporting |= bit }
            }
            var disagreeing = false
            for i in 0..<3 where importing & (1 << i) != 0 {
                for e in 0..<3 where exporting & (1 << e) != 0 {
                    let pi = powers[phase(i)], pe = powers[phase(e)]
                    let small = min(pi, -pe), large = max(pi, -pe)
                    if small >= ratio * large { disagreeing = true }
                }
            }
            if disagreeing {
                // The minority sign is the one wired the wrong way round; on a tie, the exporting phases.
                result |= importing.nonzeroBitCount < exporting.nonzeroBitCount ? importing : exporting
            }
            return result
        }
        let h = config.reversePowerHysteresisW
        return (reversed(meaningful: config.reverseMeaningfulLoadW, ratio: config.reverseComparableRatio,
                         noise: config.reversePowerNoiseFloorW),
                reversed(meaningful: max(0, config.reverseMeaningfulLoadW - h),
                         ratio: max(0, config.reverseComparableRatio - 0.1),
                         noise: max(0, config.reversePowerNoiseFloorW - h)))
    }

    private static func phase(_ index: Int) -> Phase { index == 0 ? .a : index == 1 ? .b : .c }

    private static func phaseList(_ mask: UInt8) -> [Phase] { (0..<3).filter { mask & (1 << $0) != 0 }.map(phase) }

    private static func currentImbalance(_ currents: ThreePhase<Double>) -> (largest: Double, percent: Double) {
        let a = abs(currents.a), b = abs(currents.b), c = abs(currents.c)
        let largest = max(a, max(b, c))
        return (largest, (largest - min(a, min(b, c))) / largest * 100)
    }

    private static func voltageImbalance(_ voltages: ThreePhase<Double>)
        -> (mean: Double, deviation: ThreePhase<Double>, percent: Double) {
        let mean = (voltages.a + voltages.b + voltages.c) / 3
        let deviation = ThreePhase(abs(voltages.a - mean), abs(voltages.b - mean), abs(voltages.c - mean))
        return (mean, deviation, max(deviation.a, max(deviation.b, deviation.c)) / mean * 100)
    }

    private static func phaseLoads(_ voltages: ThreePhase<Double>, _ currents: ThreePhase<Double>) -> ThreePhase<Double> {
        ThreePhase(voltages.a * abs(currents.a), voltages.b * abs(currents.b), voltages.c * abs(currents.c))
    }

    private static func powerFactorSample(_ pf: Double, _ config: StatusEngineConfig) -> DebouncedCondition.Sample {
        let magnitude = abs(pf)
        return magnitude < config.lowPowerFactor ? .beyond
            : magnitude >= config.lowPowerFactor + config.powerFactorHysteresis ? .within : .inBand
    }

    private static let unknown = Judgement(sample: .unknown, phases: [], detail: "not measured")

    private static func judgeOverVoltage(_ voltages: ThreePhase<Double>?, _ config: StatusEngineConfig) -> Judgement {
        guard let voltages, allFinite(voltages) else { return unknown }
        let (raise, clear) = overVoltageLimits(config)
        let phases = Phase.allCases.filter { voltages[$0] > clear }
        let sample: DebouncedCondition.Sample = Phase.allCases.contains { voltages[$0] > raise } ? .beyond
            : phases.isEmpty ? .within : .inBand
        return Judgement(sample: sample, phases: phases,
                         detail: describe(voltages, unit: "V", phases: phases) + " (limit \(fixed(raise, 1)) V)")
    }

    private static func judgeUnderVoltage(_ voltages: ThreePhase<Double>?, _ config: StatusEngineConfig) -> Judgement {
        guard let voltages, allFinite(voltages) else { return unknown }
        let (raise, clear) = underVoltageLimits(config)
        let phases = Phase.allCases.filter { voltages[$0] < clear }
        let sample: DebouncedCondition.Sample = Phase.allCases.contains { voltages[$0] < raise } ? .beyond
            : phases.isEmpty ? .within : .inBand
        return Judgement(sample: sample, phases: phases,
                         detail: describe(voltages, unit: "V", phases: phases) + " (limit \(fixed(raise, 1)) V)")
    }

    private static func judgeReverse(_ powers: ThreePhase<Double>?, _ config: StatusEngineConfig) -> Judgement {
        guard let powers, allFinite(powers) else { return unknown }
        let (raisedMask, notClearedMask) = reversedMasks(powers, config)
        let raised = phaseList(raisedMask), notCleared = phaseList(notClearedMask)
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
        let (largest, imbalance) = currentImbalance(currents)
        let text = "currents " + Phase.allCases.map { "\($0.rawValue) \(fixed(abs(currents[$0]), 1)) A" }
            .joined(separator: ", ")
        // At light load a single appliance is a 100 % imbalance that means nothing: judged only above the minimum.
        guard largest >= config.currentImbalanceMinimumA else {
            return Judgement(sample: .within, phases: [], detail: text + " (below \(fixed(config.currentImbalanceMinimumA, 1)) A, not judged)")
        }
        return classify(imbalance, raise: config.currentImbalancePercent,
                        hysteresis: config.currentImbalanceHysteresisPercent, phases: [],
                        detail: "imbalance \(fixed(imbalance, 1)) %, \(text) (limit \(fixed(config.currentImbalancePercent, 1)) %)")
    }

    private static func judgeVoltageImbalance(_ voltages: ThreePhase<Double>?,
                                              _ config: StatusEngineConfig) -> Judgement {
        guard let voltages, allFinite(voltages) else { return unknown }
        let (mean, deviation, imbalance) = voltageImbalance(voltages)
        guard mean >= config.voltageImbalanceMinimumV else {
            return Judgement(sample: .within, phases: [], detail: "mean voltage \(fixed(mean, 1)) V, not judged")
        }
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
        let phaseLoad = phaseLoads(voltages, currents)
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
        return Judgement(sample: powerFactorSample(pf, config), phases: phases,
                         detail: "total PF \(fixed(pf, 2)) at \(fixed(load, 0)) VA (limit \(fixed(config.lowPowerFactor, 2)))")
    }

    /// For "higher is worse" percentages: beyond above `raise`, within at or below `raise − hysteresis`.
    private static func classify(_ value: Double, raise: Double, hysteresis: Double, phases: [Phase],
                                 detail: String) -> Judgement {
        Judgement(sample: classify(value, raise: raise, hysteresis: hysteresis), phases: phases, detail: detail)
    }

    private static func classify(_ value: Double, raise: Double, hysteresis: Double) -> DebouncedCondition.Sample {
        value > raise ? .beyond : value <= raise - hysteresis ? .within : .inBand
    }

    /// Without `values` (a new array at every call: issue 18).
    private static func allFinite(_ values: ThreePhase<Double>) -> Bool {
        values.a.isFinite && values.b.isFinite && values.c.isFinite
    }

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
