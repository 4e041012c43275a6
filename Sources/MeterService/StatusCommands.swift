import MeterStatus

/// `meter_status`: the CalinMeter-style operating status derived from the KPM33B, with the action to take.
public struct StatusCommands: Sendable {
    /// The first meter's monitor.
    public let monitor: StatusMonitor
    /// One monitor per meter, in the order of `MeterAPI.links` (issue 17).
    public let monitors: [StatusMonitor]
    private let select: @Sendable (CommandRequest) -> Result<Int, MeterAPI.MeterSelectionError>

    public init(monitor: StatusMonitor) {
        self.monitor = monitor
        self.monitors = [monitor]
        self.select = { _ in .success(0) }
    }

    /// Several meters: `meter_status` takes the optional `"meter"` (meter id or address) that `api` resolves.
    public init(monitors: [StatusMonitor], api: MeterAPI) {
        precondition(!monitors.isEmpty)
        self.monitor = monitors[0]
        self.monitors = monitors
        self.select = { [api] in api.meterIndex(for: $0) }
    }

    /// The `meter_status` reply; the CLI's `meterext status` decodes the same type.
    public struct Reply: Codable, Sendable {
        public struct Alert: Codable, Sendable {
            public var ami_code: String
            public var sub_code: String
            public var cause: String
            public var action: String
            public var phases: String
            public var detail: String
        }

        /// `ok` (a main status is known), `unknown` (online, but the engine cannot tell), `offline`, `starting`.
        public var status: String
        public var ami_code: String?
        public var sub_code: String?
        public var cause: String?
        public var action: String?
        public var prepaid_only: String?
        /// Why the board reports this main status (or none): the inputs it went by.
        public var because: String?
        public var alerts: [Alert]
        public var result = "OK"
    }

    /// As the guide writes it: "00", "3", "13".
    static func subCodeText(_ n: Int?) -> String? { n.map(StatusCodeEntry.subCodeText) }

    public func register(into registry: inout CommandRegistry) {
        let monitors = self.monitors, select = self.select
        registry.register("meter_status", sync: { request in
            let monitor: StatusMonitor
            switch select(request) {
            case .success(let index) where index < monitors.count: monitor = monitors[index]
            case .success: return .error(.invalidParameter, "field 'meter' names a meter without a status monitor")
            case .failure(let error): return error.result
            }
            let (status, health) = monitor.current()
            let state: String
            switch health {
            case .online: state = status?.main == nil ? "unknown" : "ok"
            case .offline, .stale: state = "offline"
            case .starting: state = "starting"
            }
            let alerts = (status?.alerts ?? []).map {
                Reply.Alert(ami_code: String($0.amiCode), sub_code: Self.subCodeText($0.subCode) ?? "",
                      cause: $0.display, action: $0.action, phases: $0.phases.map(\.rawValue).joined(separator: ","),
                      detail: $0.detail)
            }
            let main = health == .online ? status?.main : nil
            return .ok(Reply(status: state, ami_code: main.map { String($0.code) }, sub_code: Self.subCodeText(main?.subCode),
                             cause: main?.display ?? (health == .online && status?.relayOpen == true
                                                          ? "Relay open, reason unknown" : nil),
                             action: health == .online ? status?.action : nil,
                             prepaid_only: main.map { String($0.prepaidOnly) },
                             because: health == .online ? status?.because : nil,
                             alerts: health == .online ? alerts : []))
        })
    }
}
