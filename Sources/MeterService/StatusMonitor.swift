import KPM33B
import MeterStatus
import Synchronization

/// Runs the status engine over the poll loop's snapshots and keeps the latest operating status for the API,
/// the set-up page, the CLI and the `0-0:96.5.0.255` entry of `meter_reading`.
public final class StatusMonitor: Sendable {
    private struct State {
        var engine: StatusEngine
        var generation: UInt64 = .max
        /// The engine's status for the last generation fed, made when first asked for (nil inside: not yet).
        var status: OperatingStatus??
        var health: LinkHealth = .starting

        mutating func currentStatus() -> OperatingStatus? {
            if let status { return status }
            let made = engine.status()
            status = .some(made)
            return made
        }
    }

    private let link: any MeterLink
    private let prepaidMode: Bool
    private let state: Mutex<State>

    public init(link: any MeterLink, config: StatusEngineConfig = StatusEngineConfig(), prepaidMode: Bool = false) {
        self.link = link
        self.prepaidMode = prepaidMode
        self.state = Mutex(State(engine: StatusEngine(config: config)))
    }

    /// Feeds the newest snapshot to the engine (once per generation) and returns the status. `now` is monotonic
    /// seconds.
    @discardableResult
    public func refresh(now: Double) -> OperatingStatus? {
        advance(now: now)
        return current().status
    }

    /// Feeds the newest snapshot to the engine's alert timers (once per generation) without making the status's
    /// words: issue 18, the service calls this every second while nobody asks; `current()` makes them on request.
    public func advance(now: Double) {
        let snapshot = link.snapshot()
        state.withLock { s in
            guard s.generation != snapshot.generation else { return }
            s.generation = snapshot.generation
            s.health = snapshot.health
            s.engine.advance(Self.inputs(from: snapshot, prepaidMode: prepaidMode), now: now)
            s.status = nil
        }
    }

    /// The status from the last refresh, and the link health it was derived under.
    public func current() -> (status: OperatingStatus?, health: LinkHealth) {
        state.withLock { s in (s.currentStatus(), s.health) }
    }

    /// The AMI code for `meter_reading`, or nil when there is none (offline, or the engine cannot tell).
    public func amiCode() -> Int? { current().status?.amiCode }

    /// What the engine may use from a snapshot. Nil (no status at all) unless the meter is online: a stale
    /// status must not be shown as current.
    public static func inputs(from s: MeterSnapshot, prepaidMode: Bool) -> StatusInputs? {
        guard s.health == .online, let relay = s.relay else { return nil }
        func three(_ a: FloatRegister, _ b: FloatRegister, _ c: FloatRegister) -> ThreePhase<Double>? {
            guard let x = s.value(a), let y = s.value(b), let z = s.value(c) else { return nil }
            return ThreePhase(Double(x), Double(y), Double(z))
        }
        let controlMode: StatusInputs.ControlMode
        switch s.parameters?.controlMode {
        case .local?: controlMode = .local
        case .remote?: controlMode = .remote
        default: controlMode = .unknown
        }
        return StatusInputs(
            // Relay 1 switches all phases (see RelayState); the phase bits are only informative.
            relayClosed: ThreePhase(all: relay.closed),
            controlMode: controlMode,
            forcedPower: forcedPower(s.parameters?.forcedPowerWords),
            loadThresholdKW: Double(s.parameters?.loadThresholdKW ?? 0),
            voltages: three(Register.voltageA, Register.voltageB, Register.voltageC),
            currents: three(Register.currentA, Register.currentB, Register.currentC),
            activePowers: three(Register.activePowerA, Register.activePowerB, Register.activePowerC),
            powerFactors: three(Register.powerFactorA, Register.powerFactorB, Register.powerFactorC),
            totalPowerFactor: s.value(Register.powerFactorTotal).map(Double.init),
            prepaidEnergyKWh: s.parameters?.plausiblePrepaidEnergyKWh.map(Double.init),
            prepaidMode: prepaidMode,
            relayOpenedByBoard: s.relayOpenedByBoard)
    }

    /// Register 0x001B as read back. The manual's wording of the command words is ambiguous; the front panel's
    /// three states map as: 0xAADD forced off, 0xB8DD forced on, 0 not forced, anything else unknown.
    static func forcedPower(_ words: (UInt16, UInt16)?) -> StatusInputs.ForcedPower {
        switch words?.0 {
        case 0xAADD?: return .forcedOff
        case 0xB8DD?: return .forcedOn
        case 0?: return .notForced
        default: return .unknown
        }
    }
}
