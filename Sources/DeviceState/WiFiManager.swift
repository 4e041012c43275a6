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
        ]
    }
}

/// The WiFi behaviour of the board, independent of the radio behind it.
///
/// - Every `start` opens the set-up access point for `AccessPointSettings.timeoutSeconds`
///   and (re)joins the configured network.
/// - `configure` tries the new network before storing it; on failure the old
///   configuration stays and is re-applied, the access point stays open, and the reason
///   is returned.
/// - The board is never stranded: an unreachable configured network is retried with
///   back-off (10 s doubling to 5 min), and after `reopenAfterNoConnectionSeconds` without
///   a connection the access point reopens.
/// - On a single radio (`supportsConcurrentAPAndClient == false`) the access point and
///   the client take turns: while the access point is open no client attempts are made.
///
/// Time comes in as `now` (monotonic seconds, e.g. `MonotonicClock.nowSeconds()`); call `tick`
/// every few seconds. Calls may block for the backend's connect timeout; call them off
/// the event loop. Operations are serialised; `status` does not wait for them.
public final class WiFiManager: Sendable {
    public static let firstRetryDelay = 10.0
    public static let maxRetryDelay = 300.0

    struct Vars {
        var deviceMAC = "00:00:00:00:00:00"
        var apOpen = false
        var apClosesAt: Double?
        var apClosedAt: Double?
        var connected = false
        var noConnectionSince: Double?
        var nextRetryAt = 0.0
        var retryDelay = WiFiManager.firstRetryDelay
        var lastFailure: String?
        var networks: [WiFiNetwork] = []
        var started = false
    }

    public let backend: any WiFiBackend
    public let store: StateStore
    /// Seconds a connection attempt may take.
    public let connectTimeout: Int
    let log: @Sendable (String) -> Void
    private let operations = Mutex(())
    private let vars = Mutex(Vars())

    public init(backend: any WiFiBackend, store: StateStore, connectTimeout: Int = 30, log: @escaping @Sendable (String) -> Void = { _ in }) {
        self.backend = backend
        self.store = store
        self.connectTimeout = connectTimeout
        self.log = log
    }

    // MARK: - Lifecycle

    public func start(now: Double) {
        operations.withLock { _ in
            try? store.updateState { $0.startCount += 1 }
            let mac: String
            do { mac = try backend.macAddress() } catch {
                log("wifi: cannot read the MAC address (\(error)); access point name will end in 0000")
                mac = "00:00:00:00:00:00"
            }
            // Scan before the access point takes the radio: a single radio cannot scan in AP mode.
            let networks = (try? backend.scan()) ?? []
            vars.withLock {
                $0.deviceMAC = mac
                $0.networks = networks
                $0.started = true
                $0.lastFailure = store.state.lastWiFiFailure
                $0.noConnectionSince = now
                $0.nextRetryAt = now
            }
            if let wifi = store.config.wifi, wifi.mode == .staAP, !backend.supportsConcurrentAPAndClient {
                log("wifi: mode sta_ap is configured but this radio cannot run access point and client at once; using sta")
            }
            openAccessPointLocked(now: now)
            tickLocked(now: now)
        }
    }

    /// Advances timers: access point timeout, client retries, access point reopening.
    public func tick(now: Double) {
        operations.withLock { _ in tickLocked(now: now) }
    }

    func tickLocked(now: Double) {
        let config = store.config
        observe(config: config, now: now)
        var v = vars.withLock { $0 }

        if v.apOpen, let closesAt = v.apClosesAt, now >= closesAt {
            closeAccessPointLocked(now: now)
            v = vars.withLock { $0 }
        }

        if let wifi = config.wifi, !v.connected, radioFreeForClient(v), now >= v.nextRetryAt {
            switch backend.connect(ssid: wifi.ssid, password: wifi.password, timeout: connectTimeout) {
            case .success:
                markConnected(ssid: wifi.ssid)
                vars.withLock { $0.lastFailure = nil }
                try? store.updateState { $0.lastWiFiFailure = nil }
                log("wifi: connected to \(wifi.ssid)")
            case .failure(let reason):
                vars.withLock {
                    $0.nextRetryAt = now + $0.retryDelay
                    $0.retryDelay = min($0.retryDelay * 2, Self.maxRetryDelay)
                }
                recordFailure("cannot join \(wifi.ssid): \(reason)")
            }
            v = vars.withLock { $0 }
        }

        if !v.apOpen, !v.connected, let since = v.noConnectionSince {
            let quietSince = max(since, v.apClosedAt ?? since)
            if now - quietSince >= Double(config.accessPoint.reopenAfterNoConnectionSeconds) {
                log("wifi: no connection for a while; reopening the set-up access point")
                openAccessPointLocked(now: now)
            }
        }
    }

    /// Reads the link state from the backend and keeps `connected` up to date.
    func observe(config: DeviceConfig, now: Double) {
        let link = (try? backend.status()) ?? .disconnected
        var onOurNetwork = link.state == .connected
        if let wanted = config.wifi?.ssid, let seen = link.ssid, seen != wanted { onOurNetwork = false }
        if config.wifi == nil { onOurNetwork = false }
        if onOurNetwork {
            if !vars.withLock({ $0.connected }) { markConnected(ssid: config.wifi!.ssid) }
        } else {
            vars.withLock {
                if $0.connected { $0.noConnectionSince = now }
                $0.connected = false
                if $0.noConnectionSince == nil { $0.noConnectionSince = now }
            }
        }
    }

    func radioFreeForClient(_ v: Vars) -> Bool {
        backend.supportsConcurrentAPAndClient || !v.apOpen
    }

    func markConnected(ssid: String) {
        vars.withLock {
            $0.connected = true
            $0.noConnectionSince = nil
            $0.retryDelay = Self.firstRetryDelay
        }
        try? store.updateState { $0.lastConnectedSSID = ssid }
        if !backend.supportsConcurrentAPAndClient {
            // Joining took the radio from the access point.
            vars.withLock { if $0.apOpen { $0.apOpen = false; $0.apClosesAt = nil } }
        }
    }

    func recordFailure(_ message: String) {
        log("wifi: \(message)")
        vars.withLock { $0.lastFailure = message }
        try? store.updateState { $0.lastWiFiFailure = message }
    }

    // MARK: - Access point

    /// Opens the set-up access point (API/CLI `ap on`), or extends its time if open.
    @discardableResult
    public func openAccessPoint(now: Double) -> Result<Void, WiFiBackendError> {
        operations.withLock { _ in openAccessPointLocked(now: now) }
    }

    /// The set-up button: same as `openAccessPoint`.
    @discardableResult
    public func setupButtonPressed(now: Double) -> Result<Void, WiFiBackendError> {
        log("wifi: set-up button pressed")
        return openAccessPoint(now: now)
    }

    @discardableResult
    public func closeAccessPoint(now: Double) -> Result<Void, WiFiBackendError> {
        operations.withLock { _ in closeAccessPointLocked(now: now) }
    }

    @discardableResult
    func openAccessPointLocked(now: Double) -> Result<Void, WiFiBackendError> {
        let config = store.config
        let permanent = config.wifi?.mode == .staAP && backend.supportsConcurrentAPAndClient
        let closesAt: Double? = permanent ? nil : now + Double(config.accessPoint.timeoutSeconds)
        let (isOpen, mac) = vars.withLock { ($0.apOpen, $0.deviceMAC) }
        if !isOpen {
            do {
                try backend.startAccessPoint(ssid: accessPointSSID(forMAC: mac), password: config.accessPoint.effectivePassword)
            } catch {
                let e = error as? WiFiBackendError ?? WiFiBackendError("\(error)")
                recordFailure("cannot open the access point: \(e)")
                return .failure(e)
            }
            log("wifi: access point \(accessPointSSID(forMAC: mac)) open")
        }
        vars.withLock {
            $0.apOpen = true
            if let closesAt, let current = $0.apClosesAt, isOpen {
                $0.apClosesAt = max(current, closesAt)
            } else {
                $0.apClosesAt = closesAt
            }
            if !backend.supportsConcurrentAPAndClient && $0.connected {
                $0.connected = false
                $0.noConnectionSince = now
            }
        }
        return .success(())
    }

    @discardableResult
    func closeAccessPointLocked(now: Double) -> Result<Void, WiFiBackendError> {
        do { try backend.stopAccessPoint() } catch {
            let e = error as? WiFiBackendError ?? WiFiBackendError("\(error)")
            log("wifi: \(e)")
            return .failure(e)
        }
        log("wifi: access point closed")
        vars.withLock {
            $0.apOpen = false
            $0.apClosesAt = nil
            $0.apClosedAt = now
            // The client may use the radio again right away.
            $0.nextRetryAt = min($0.nextRetryAt, now)
            $0.retryDelay = Self.firstRetryDelay
        }
        return .success(())
    }

    // MARK: - Commands

    /// `wifi_config`: resolves missing fields from the stored configuration, tries the
    /// network, and stores it only when the board got connected.
    public func configure(_ request: WiFiConfigRequest, now: Double) -> Result<WiFiClientConfig, WiFiConnectFailure> {
        operations.withLock { _ in configureLocked(request, now: now) }
    }

    func configureLocked(_ request: WiFiConfigRequest, now: Double) -> Result<WiFiClientConfig, WiFiConnectFailure> {
        let old = store.config.wifi
        let candidate: WiFiClientConfig
        switch Self.resolve(request, stored: old, concurrent: backend.supportsConcurrentAPAndClient) {
        case .failure(let f): return .failure(f)
        case .success(let c): candidate = c
        }
        let connected = vars.withLock { $0.connected }
        if let old, connected, old.ssid == candidate.ssid, old.password == candidate.password {
            // Only the mode changed: nothing to try.
            return commit(candidate, now: now)
        }
        if !backend.supportsConcurrentAPAndClient {
            // Trying the network takes the radio from the access point.
            vars.withLock { $0.apOpen = false }
        }
        switch backend.connect(ssid: candidate.ssid, password: candidate.password, timeout: connectTimeout) {
        case .success:
            markConnected(ssid: candidate.ssid)
            log("wifi: joined \(candidate.ssid); configuration stored")
            return commit(candidate, now: now)
        case .failure(let reason):
            recordFailure("cannot join \(candidate.ssid): \(reason)")
            vars.withLock {
                $0.connected = false
                if $0.noConnectionSince == nil { $0.noConnectionSince = now }
            }
            if let old, backend.supportsConcurrentAPAndClient {
                if case .success = backend.connect(ssid: old.ssid, password: old.password, timeout: connectTimeout) {
                    markConnected(ssid: old.ssid)
                }
            }
            // A single radio re-joins the old network when the access point closes (tick).
            vars.withLock { $0.nextRetryAt = now; $0.retryDelay = Self.firstRetryDelay }
            openAccessPointLocked(now: now)
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
        // A change between sta and sta_ap changes whether the access point times out.
        let apOpen = vars.withLock { $0.apOpen }
        if apOpen {
            if config.mode == .staAP {
                vars.withLock { $0.apClosesAt = nil }
            } else if vars.withLock({ $0.apClosesAt == nil }) {
                vars.withLock { $0.apClosesAt = now + Double(store.config.accessPoint.timeoutSeconds) }
            }
        } else if config.mode == .staAP {
            openAccessPointLocked(now: now)
        }
        return .success(config)
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

    /// `meter_factreset`: forgets WiFi and all settings, reopens the access point.
    public func factoryReset(now: Double) throws {
        try operations.withLock { _ in
            try store.factoryReset()
            try? backend.forgetClient()
            vars.withLock {
                $0.connected = false
                $0.lastFailure = nil
                $0.noConnectionSince = now
            }
            // New access point settings (password back to default) need a fresh start.
            if vars.withLock({ $0.apOpen }) { closeAccessPointLocked(now: now) }
            openAccessPointLocked(now: now)
        }
    }

    /// Whether the set-up access point is open now. Cheap and non-blocking (no backend call): the HTTP layer asks
    /// it for every protected request.
    public var accessPointIsOpen: Bool { vars.withLock { $0.apOpen } }

    public func status(now: Double) -> WiFiStatusReport {
        let link = (try? backend.status()) ?? .disconnected
        let config = store.config
        let v = vars.withLock { $0 }
        return WiFiStatusReport(
            link: link, deviceMAC: v.deviceMAC, configuredSSID: config.wifi?.ssid, mode: config.wifi?.mode,
            accessPoint: AccessPointStatus(
                isOpen: v.apOpen, ssid: accessPointSSID(forMAC: v.deviceMAC), address: backend.accessPointAddress,
                closesInSeconds: v.apOpen ? v.apClosesAt.map { max(0, Int(($0 - now).rounded(.up))) } : nil),
            lastFailure: v.lastFailure, concurrentAPAndClient: backend.supportsConcurrentAPAndClient)
    }
}
