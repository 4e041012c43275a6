/// Limits for the measurement alerts. Every alert has a raise limit and a clear limit a hysteresis band away,
/// so a reading hovering around the limit does not toggle it; on top of that a condition must hold for
/// `minimumDuration` before the alert is raised, and be gone for as long before it is cleared.
public struct StatusEngineConfig: Sendable, Equatable {
    /// Seconds a condition must hold (or be gone) before an alert is raised (or cleared).
    public var minimumDuration: Double = 10

    /// Nominal phase voltage, V.
    public var nominalVoltage: Double = 230
    /// Over voltage (1011) above nominal + this many percent.
    public var overVoltagePercent: Double = 10
    /// Under voltage (1012) below nominal − this many percent.
    public var underVoltagePercent: Double = 10
    /// Percent of nominal a voltage must come back inside the limit before an alert clears.
    public var voltageHysteresisPercent: Double = 2

    /// Current reverse (1013): export is normal (PV), so a reversal is judged only where it shows:
    /// - phases disagreeing in sign at meaningful load: one phase importing at least `reverseMeaningfulLoadW` while
    ///   another exports at least as much and a comparable amount (the smaller at least `reverseComparableRatio` of
    ///   the larger): the signature of a swapped CT or phase;
    /// - export on a phase the installer marked as wired for import only (`import_only_phases`).
    public var importOnlyPhases: Set<Phase> = []
    /// Active power (W, either sign) a phase must carry to count in the sign comparison.
    public var reverseMeaningfulLoadW: Double = 100
    /// The exporting and the importing phase's powers must be within this ratio of each other.
    public var reverseComparableRatio: Double = 0.5
    /// Negative active power smaller than this (W) on an import-only phase is measurement noise at no load.
    public var reversePowerNoiseFloorW: Double = 20
    /// The reverse alert clears once the powers are this much (W) back inside the limits.
    public var reversePowerHysteresisW: Double = 10

    /// Current imbalance (1016): (max − min) / max of the phase currents above this percentage …
    public var currentImbalancePercent: Double = 30
    /// … judged only while the largest phase current is at least this (A); at light load one small appliance
    /// is a 100 % imbalance and means nothing.
    public var currentImbalanceMinimumA: Double = 1
    /// Percentage points below the limit before the alert clears.
    public var currentImbalanceHysteresisPercent: Double = 5

    /// Voltage imbalance (1021): largest deviation of a phase voltage from the mean, percent of the mean.
    public var voltageImbalancePercent: Double = 3
    public var voltageImbalanceHysteresisPercent: Double = 1
    /// Below this mean voltage (V) there is no supply to be imbalanced; the alert is not judged.
    public var voltageImbalanceMinimumV: Double = 50

    /// Low power factor (1023): |total PF| below this …
    public var lowPowerFactor: Double = 0.8
    /// … clears once |total PF| is at least `lowPowerFactor` + this.
    public var powerFactorHysteresis: Double = 0.05
    /// … judged only while the load (Σ phase V × I) is at least this many VA: at no load the meter's PF is noise.
    public var lowPowerFactorMinimumLoadVA: Double = 200

    public init() {}
}
