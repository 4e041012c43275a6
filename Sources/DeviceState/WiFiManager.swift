import Synchronization

/// A `wifi_config` request; every field is optional, as on a MeterExtension #1.
public struct WiFiConfigRequest: Sendable, Equatable {
    public var ssid: String?
    public var password: Secret?
    /// "sta" or "sta_ap"; anything else is refused.
    public var mode: String?

    public init(ssid: String? = nil, password: Secret? = nil, mode: String? = nil) {
        self.ssid = ssid
        self.password = password
        self.mode = mode
    }
}

/// The set-up access point, as `wifi_status` reports it.
public struct AccessPointStatus: Sendable, Equatable {
    public var isOpen: Bool
    public var ssid: String
    public var address: String
    /// Seconds until it closes; nil when closed, or open without time limit (`sta_ap`).
    public var closesInSeconds: Int?
}

/// Everything `wifi_status` (and the set-up page) shows. Contains no secrets.
public struct WiFiStatusReport: Sendable, Equatable {
    public var link: WiFiLinkStatus
    public var deviceMAC: String
    public var configuredSSID: String?
    public var mode: WiFiMode?
    public var accessPoint: AccessPointStatus
    /// Why the last attempt to join a network failed, in plain words; nil after a success.
    public var lastFailure: String?
    public var concurrentAPAndClient: Bool
    /// Why the access point is open (nil when closed).
    public var accessPointReason: AccessPointReason?

    /// The `wifi_status` response fields (all strings, as in the interface description;
    /// `ap-mac` is the board's own MAC there). Extra fields carry the access point state.
    public var apiFields: [String: String] {
        [
            "ssid": link.ssid ?? configuredSSID ?? "",
            "rssi": link.rssiDBm.map(String.init) ?? "",
            "ap-mac": deviceMAC,
            "IP": link.ipv4 ?? "",
            "bssid": link.bssid ?? "",
            "state": link.state.rawValue,
            "mode": mode?.rawValue ?? "",
            "ap": accessPoint.isOpen ? "open" : "closed",
            "ap-ssid": accessPoint.ssid,
            "ap-ip": accessPoint.address,
            "ap-closes-in": accessPoint.closesInSeconds.map(String.init) ?? "",
            "last-error": lastFailure ?? "",
            "ap-reason": accessPoint.isOpen ? (accessPointReason?.rawValue ?? "") : "",
            "radio": concurrentAPAndClient ? "concurrent" : "single",
        ]
    }
}

/// The WiFi behaviour of the board: the executor of `WiFiPolicy`.
///
/// The policy decides (when the access point opens and closes, when the client is tried); this class only feeds it
/// events (start, tick with the radio's state, results) and performs its actions on the backend (nmcli/iw), then
/// feeds the results back. `configure` tries the new network before storing it; on failure the old configuration
/// stays and is re-applied, the access point (re)opens, and the reason is returned.
///
/// Time comes in as `now` (monotonic seconds, e.g. `MonotonicClock.nowSeconds()`); call `tick` every few seconds.
/// Calls may block for the backend's connect timeout; call them off the event loop (the service runs them on its
/// WiFi queue). Operations are serialised; `accessPointIsOpen` does not wait for them.
public final class WiFiManager: Sendable {
    public static let firstRetryDelay = WiFiPolicy.firstRetryDelay
    public static let maxRetryDelay = WiFiPolicy.maxRetryDelay

    struct Vars {
        var deviceMAC = "00:00:00:00:00:00"
        var lastFailure: String?
        var networks: [WiFiNetwork] = []
        var apOpen = false
    }

    public let backend: any WiFiBackend
    public let store: StateStore
    /// Where the boot marker and the policy's memory live; nil: every start counts as a new boot.
    public let runtime: WiFiRuntime?
    /// Seconds a connection attempt may take.
    public let connectTimeout: Int
    let log: @Sendable (String) -> Void
    private let policy: Mutex<WiFiPolicy>
    /// The policy memory last written to the runtime directory (nil: not written by this process yet).
    private let savedMemory = Mutex<WiFiPolicy.Memory?>(nil)
    private let vars = Mutex(Vars())

    public init(backend: any WiFiBackend, store: StateStore, runtime: WiFiRuntime? = nil, connectTimeout: Int = 30,
                log: @escaping @Sendable (String) -> Void = { _ in }) {
        self.backend = backend
        self.store = store
        self.runtime = runtime
        self.connectTimeout = connectTimeout
        self.log = log
        let ap = store.config.accessPoint
        self.policy = Mutex(WiFiPolicy(settings: .init(
            accessPointTimeout: Double(ap.timeoutSeconds), reopenAfterNoConnection: Double(ap.reopenAfterNoConnectionSeconds),
            concurrent: backend.supportsConcurrentAPAndClient)))
    }

    /// A copy of the policy (tests, status).
    public var policyState: WiFiPolicy { policy.withLock { $0 } }

    // MARK: - Executor

    /// Feeds `event` to the policy and performs what it asks, feeding each result back. Holds the policy lock
    /// throughout: operations are serialised, and `accessPointIsOpen` reads a separate copy.
    @discardableResult
    func run(_ event: WiFiPolicy.Event) -> Result<Void, WiFiBackendError> {
        policy.withLock { p in
            // Results are fed back at the event's instant; set under the lock, so concurrent callers cannot mix.
            at(event.now)
            var result: Result<Void, WiFiBackendError> = .success(())
            var queue = p.handle(event)
            while !queue.isEmpty {
                let action = queue.removeFirst()
                let more: [WiFiPolicy.Action]
                switch action {
                case .connect:
                    more = connectConfigured(&p)
                case .openAccessPoint(let reason):
                    let r = startAccessPoint(reason: reason)
                    if case .failure = r { result = r }
                    more = p.handle(.accessPointOpened(now: currentNow, succeeded: r.isSuccess))
                case .extendAccessPoint:
                    more = []
                case .closeAccessPoint:
                    let r = stopAccessPoint()
                    if case .failure = r { result = r }
                    more = p.handle(.accessPointClosed(now: currentNow, succeeded: r.isSuccess))
                }
                queue += more
            }
            let memory = p.memory
            vars.withLock { $0.apOpen = memory.accessPointOpen }
            // Issue 18: written when it changed, not at every tick (JSON, a file and an fsync every 5 s).
            if savedMemory.withLock({ $0 }) != memory {
                runtime?.saveMemory(memory)
                savedMemory.withLock { $0 = memory }
            }
            return result
        }
    }

    /// The time of the event being executed (results are fed back at the same instant: the policy needs no more).
    private let nowBox = Mutex(0.0)
    private var currentNow: Double { nowBox.withLock { $0 } }
    private func at(_ now: Double) { nowBox.withLock { $0 = now } }

    func connectConfigured(_ p: inout WiFiPolicy) -> [WiFiPolicy.Action] {
        guard let wifi = store.config.wifi else { return [] }
        switch backend.connect(ssid: wifi.ssid, password: wifi.password, timeout: connectTimeout) {
        case .success:
            joined(wifi.ssid)
            return p.handle(.connectFinished(now: currentNow, succeeded: true))
        case .failure(let reason):
            recordFailure("cannot join \(wifi.ssid): \(reason)")
            return p.handle(.connectFinished(now: currentNow, succeeded: false))
        }
    }

    /// `keepingFailure`: the old network came back after a failed `wifi_config`; the failure stays news.
    func joined(_ ssid: String, keepingFailure: Bool = false) {
        log("wifi: connected to \(ssid)")
        if !keepingFailure { vars.withLock { $0.lastFailure = nil } }
        try? store.updateState {
            $0.lastConnectedSSID = ssid
            if !keepingFailure { $0.lastWiFiFailure = nil }
        }
    }

    func startAccessPoint(reason: AccessPointReason) -> Result<Void, WiFiBackendError> {
        let mac = vars.withLock { $0.deviceMAC }
        let ssid = accessPointSSID(forMAC: mac)
        do {
            try backend.startAccessPoint(ssid: ssid, password: store.config.accessPoint.effectivePassword)
        } catch {
            let e = error as? WiFiBackendError ?? WiFiBackendError("\(error)")
            recordFailure("cannot open the access point: \(e)")
            return .failure(e)
        }
        log("wifi: access point \(ssid) open (\(reason.rawValue))")
        return .success(())
    }

    func stopAccessPoint() -> Result<Void, WiFiBackendError> {
        do { try backend.stopAccessPoint() } catch {
            let e = error as? WiFiBackendError ?? WiFiBackendError("\(error)")
            log("wifi: \(e)")
            return .failure(e)
        }
        log("wifi: access point closed")
        return .success(())
    }

    func observation() -> WiFiPolicy.Observation {
        let config = store.config
        let link = (try? backend.status()) ?? .disconnected
        var up = link.state == .connected
        if let wanted = config.wifi?.ssid, let seen = link.ssid, seen != wanted { up = false }
        return WiFiPolicy.Observation(configured: config.wifi != nil, permanentAccessPoint: config.wifi?.mode == .staAP,
                                      linkUp: up && config.wifi != nil)
    }

    func recordFailure(_ message: String) {
        log("wifi: \(message)")
        vars.withLock { $0.lastFailure = message }
        try? store.updateState { $0.lastWiFiFailure = message }
    }

    // MARK: - Lifecycle

    /// The service started: a new boot (no marker in the runtime directory) opens the access point; a service
    /// restart resumes where the previous process left off, so a connected board stays connected.
    public func start(now: Double) {
        at(now)
        try? store.updateState { $0.startCount += 1 }
        let mac: String
        do { mac = try backend.macAddress() } catch {
            log("wifi: cannot read the MAC address (\(error)); access point name will end in 0000")
            mac = "00:00:00:00:00:00"
        }
        let newBoot = runtime?.claimBoot() ?? true
        let memory = newBoot ? nil : runtime?.loadMemory()
        let observed = observation()
        // Scan before the access point takes the radio: a single radio cannot scan in AP mode.
        let networks = (try? backend.scan()) ?? []
        vars.withLock {
            $0.deviceMAC = mac
            $0.networks = networks
            $0.lastFailure = store.state.lastWiFiFailure
        }
        if let wifi = store.config.wifi, wifi.mode == .staAP, !backend.supportsConcurrentAPAndClient {
            log("wifi: mode sta_ap is configured but this radio cannot run access point and client at once; using sta")
        }
        log(newBoot ? "wifi: new boot" : "wifi: service restart in the same boot: keeping the radio as it is")
        run(.boot(now: now, newBoot: newBoot, memory: memory, observed))
    }

    /// Advances timers: access point timeout, client retries, access point reopening.
    public func tick(now: Double) {
        at(now)
        run(.tick(now: now, observation()))
    }

    // MARK: - Access point

    /// Opens the set-up access point (API/CLI `ap on`), or extends its time if open.
    @discardableResult
    public func openAccessPoint(now: Double) -> Result<Void, WiFiBackendError> {
        at(now)
        return run(.accessPointRequested(now: now, open: true))
    }

    /// The set-up button.
    @discardableResult
    public func setupButtonPressed(now: Double) -> Result<Void, WiFiBackendError> {
        log("wifi: set-up button pressed")
        at(now)
        return run(.button(now: now))
    }

    @discardableResult
    public func closeAccessPoint(now: Double) -> Result<Void, WiFiBackendError> {
        at(now)
        return run(.accessPointRequested(now: now, open: false))
    }

    // MARK: - Commands

    /// `wifi_config`: resolves missing fields from the stored configuration, tries the
    /// network, and stores it only when the board got connected.
    public func configure(_ request: WiFiConfigRequest, now: Double) -> Result<WiFiClientConfig, WiFiConnectFailure> {
        at(now)
        let old = store.config.wifi
        let candidate: WiFiClientConfig
        switch Self.resolve(request, stored: old, concurrent: backend.supportsConcurrentAPAndClient) {
        case .failure(let f): return .failure(f)
        case .success(let c): candidate = c
        }
        let connected = policy.withLock { $0.connected }
        if let old, connected, old.ssid == candidate.ssid, old.password == candidate.password {
            // Only the mode changed: nothing to try.
            return commit(candidate, now: now)
        }
        run(.trialStarted(now: now))
        switch backend.connect(ssid: candidate.ssid, password: candidate.password, timeout: connectTimeout) {
        case .success:
            log("wifi: joined \(candidate.ssid); configuration stored")
            let result = commit(candidate, now: now)
            joined(candidate.ssid)
            policy.withLock { _ = $0.handle(.connectFinished(now: now, succeeded: true)) }
            run(.tick(now: now, observation()))
            return result
        case .failure(let reason):
            recordFailure("cannot join \(candidate.ssid): \(reason)")
            if let old, backend.supportsConcurrentAPAndClient {
                if case .success = backend.connect(ssid: old.ssid, password: old.password, timeout: connectTimeout) {
                    joined(old.ssid, keepingFailure: true)
                }
            }
            // A single radio re-joins the old network when the access point closes (tick).
            run(.trialFailed(now: now, observation()))
            return .failure(reason)
        }
    }

    func commit(_ config: WiFiClientConfig, now: Double) -> Result<WiFiClientConfig, WiFiConnectFailure> {
        do {
            try store.updateConfig { $0.wifi = config }
        } catch {
            return .failure(.backend("joined the network but cannot store the configuration: \(error)"))
        }
        vars.withLock { $0.lastFailure = nil }
        try? store.updateState { $0.lastWiFiFailure = nil }
        run(.configurationChanged(now: now, observation(), reason: nil))
        return .success(config)
    }

    /// The board's address on its client network (what `wifi_config` tells the phone on a concurrent radio).
    public func clientAddress() -> String? {
        guard let link = try? backend.status(), link.state == .connected else { return nil }
        return link.ipv4
    }
    /// Fills in missing `wifi_config` fields and checks them.
    static func resolve(_ r: WiFiConfigRequest, stored: WiFiClientConfig?, concurrent: Bool) -> Result<WiFiClientConfig, WiFiConnectFailure> {
        let ssid = r.ssid ?? stored?.ssid
        guard let ssid, !ssid.isEmpty else { return .failure(.invalidInput("ssid is missing")) }
        guard ssid.utf8.count <= 32 else { return .failure(.invalidInput("ssid is longer than 32 bytes")) }
        var password = r.password
        if password == nil, let stored, stored.ssid == ssid { password = stored.password }
        if let p = password?.revealed, !p.isEmpty {
            let isHexKey = p.count == 64 && p.allSatisfy(\.isHexDigit)
            guard (8...63).contains(p.count) || isHexKey else {
                return .failure(.invalidInput("password must have 8 to 63 characters"))
            }
        }
        let mode: WiFiMode
        if let m = r.mode {
            guard let parsed = WiFiMode(rawValue: m) else {
                return .failure(.invalidInput("mode must be \"sta\" or \"sta_ap\""))
            }
            mode = parsed
        } else {
            mode = stored?.mode ?? .sta
        }
        if mode == .staAP && !concurrent {
            return .failure(.radioBusy(
                "this board's WiFi radio cannot run the access point and a client connection at the same time; use mode \"sta\""))
        }
        return .success(WiFiClientConfig(ssid: ssid, password: password?.isEmpty == true ? nil : password, mode: mode))
    }

    /// Visible networks. On a single radio with the access point open, scanning is
    /// usually refused; the list from before the access point opened is returned then.
    public func scan() -> [WiFiNetwork] {
        if let fresh = try? backend.scan(), !fresh.isEmpty {
            vars.withLock { $0.networks = fresh }
            return fresh
        }
        return vars.withLock { $0.networks }
    }

    /// `meter_factreset`: forgets WiFi and all settings (the access point password back to the default) and
    /// reopens the access point with the default settings.
    public func factoryReset(now: Double) throws {
        at(now)
        try store.factoryReset()
        try? backend.forgetClient()
        vars.withLock { $0.lastFailure = nil }
        run(.configurationChanged(now: now, observation(), reason: .factoryReset))
    }

    /// `meterext wifi ap-password`: stores the per-device access point password (nil: back to the default); an open
    /// access point restarts with it.
    public func setAccessPointPassword(_ password: Secret?, now: Double) throws {
        try store.updateConfig { $0.accessPoint.password = password }
        log("wifi: access point password changed")
        accessPointSettingsChanged(now: now)
    }

    /// The access point settings changed: an open access point restarts with them.
    public func accessPointSettingsChanged(now: Double) {
        at(now)
        guard policy.withLock({ $0.accessPointOpen }) else { return }
        let reason = policy.withLock { $0.accessPointReason } ?? .command
        run(.configurationChanged(now: now, observation(), reason: reason))
    }

    /// Whether the set-up access point is open now. Cheap and non-blocking (no backend call, no wait for a running
    /// operation): the HTTP layer asks it for every protected request.
    public var accessPointIsOpen: Bool { vars.withLock { $0.apOpen } }

    public func status(now: Double) -> WiFiStatusReport {
        let link = (try? backend.status()) ?? .disconnected
        let config = store.config
        let v = vars.withLock { $0 }
        let p = policy.withLock { $0 }
        return WiFiStatusReport(
            link: link, deviceMAC: v.deviceMAC, configuredSSID: config.wifi?.ssid, mode: config.wifi?.mode,
            accessPoint: AccessPointStatus(
                isOpen: p.accessPointOpen, ssid: accessPointSSID(forMAC: v.deviceMAC), address: backend.accessPointAddress,
                closesInSeconds: p.accessPointClosesIn(now: now)),
            lastFailure: v.lastFailure, concurrentAPAndClient: backend.supportsConcurrentAPAndClient,
            accessPointReason: p.accessPointOpen ? p.accessPointReason : nil)
    }
}

extension Result {
    var isSuccess: Bool { if case .success = self { return true } else { return false } }
}
