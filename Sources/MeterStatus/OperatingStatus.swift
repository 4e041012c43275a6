/// What the board says about the meter, in CalinMeter's words: one main operating status and any measurement
/// alerts.
public struct OperatingStatus: Sendable, Equatable {
    /// The AMI operating status (1000, 1001, 1003 or 1007), or nil when the KPM33B does not tell us why its relay
    /// is open: no status is better than a wrong one.
    public var main: StatusCodeEntry?
    /// Why the engine chose `main` (or none), in words: "relay open (phase A,B,C) after this board's relay_set
    /// command opened it".
    public var because: String
    /// The relay is open (some phase).
    public var relayOpen: Bool
    /// Measurement conditions that held for the minimum duration, in AMI code order.
    public var alerts: [StatusAlert]

    /// What to do when the relay is open and the board cannot tell why.
    public static let unknownOpenAction = "Read the meter's display: code 87 and its sub-code say why the relay opened."

    public init(main: StatusCodeEntry?, because: String = "", relayOpen: Bool = false, alerts: [StatusAlert]) {
        self.main = main
        self.because = because
        self.relayOpen = relayOpen
        self.alerts = alerts
    }

    /// The main status's action, or "read the meter's display" when the relay is open for an unknown reason.
    public var action: String? { main?.action ?? (relayOpen ? Self.unknownOpenAction : nil) }

    public var amiCode: Int? { main?.code }
    /// The code-87 sub-code of the main status (AMI code − 1000).
    public var subCode: Int? { main?.subCode }
}

/// A measurement condition the KPM33B does not judge itself (it has no voltage or PF trip), reported with the
/// CalinMeter code field staff know for it.
public struct StatusAlert: Sendable, Equatable {
    /// The AMI entry (1011, 1012, 1013, 1016, 1021 or 1023): cause, action, sub-code.
    public var entry: StatusCodeEntry
    /// The phases involved, where the condition belongs to phases (over/under voltage, reverse, low PF).
    public var phases: [Phase]
    /// When the alert was raised, on the caller's time scale.
    public var since: Double
    /// The reading behind it, for example "phase B 262.4 V (limit 253.0 V)".
    public var detail: String

    public init(entry: StatusCodeEntry, phases: [Phase], since: Double, detail: String) {
        self.entry = entry
        self.phases = phases
        self.since = since
        self.detail = detail
    }

    public var amiCode: Int { entry.code }
    public var subCode: Int? { entry.subCode }
    public var cause: String { entry.cause }
    /// Cause with its explanation, as shown on a display: "Current Reverse (possible tamper/wiring issue)".
    public var display: String { entry.display }
    public var action: String { entry.action }
}
