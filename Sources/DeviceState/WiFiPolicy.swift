/// Why the set-up access point is open; shown in `wifi_status` (`ap-reason`) so field staff can tell.
public enum AccessPointReason: String, Sendable, Equatable, Codable {
    /// The board was powered up (a new boot, not a service restart).
    case newBoot = "new-boot"
    /// No network is configured: the access point stays open until one is.
    case notConfigured = "not-configured"
    /// The configured network has been unreachable for `reopenAfterNoConnectionSeconds`.
    case unreachable
    /// The set-up button.
    case button
    /// `wifi_ap` / `meterext wifi ap on`.
    case command
    /// A `wifi_config` attempt failed: the phone must be able to come back.
    case configFailed = "config-failed"
    /// `sta_ap` on a radio that runs both at once: open for good.
    case permanent
    /// Factory reset.
    case factoryReset = "factory-reset"
}

/// The WiFi policy: when the set-up access point opens and closes and when the client (re)joins, as a plain value
/// without I/O. Events go in (boot, tick with what the radio reports, results of the calls, button, commands); the
/// `Action`s that come out are what the executor (`WiFiManager`) does with the radio, feeding the results back as
/// events. Time is monotonic seconds supplied by the caller, so tests drive it with synthetic time.
///
/// Rules:
/// - the access point opens on a new boot, when no network is configured, when the configured network has been
///   unreachable for `reopenAfterNoConnectionSeconds` (900 s), on the button, and on command — never because the
///   service restarted: a restart resumes the `Memory` the previous process left in the runtime directory;
/// - it closes after `timeoutSeconds` (600 s) unless no network is configured or `sta_ap` runs on a concurrent radio;
/// - a single radio does one thing at a time: while the access point is open the client is not tried, and joining
///   takes the radio from the access point;
/// - an unreachable network is retried with back-off (10 s doubling to 5 min).
public struct WiFiPolicy: Sendable, Equatable {
    public static let firstRetryDelay = 10.0
    public static let maxRetryDelay = 300.0

    public struct Settings: Sendable, Equatable {
        public var accessPointTimeout: Double
        public var reopenAfterNoConnection: Double
        /// The radio runs the access point and a client at once (a second interface such as `uap0`).
        public var concurrent: Bool
        public init(accessPointTimeout: Double = 600, reopenAfterNoConnection: Double = 900, concurrent: Bool = false) {
            self.accessPointTimeout = accessPointTimeout
            self.reopenAfterNoConnection = reopenAfterNoConnection
            self.concurrent = concurrent
        }
    }

    /// What a service restart must not lose; kept in the runtime directory (a tmpfs emptied at every boot).
    /// Times are monotonic seconds, valid for the whole boot.
    public struct Memory: Sendable, Equatable, Codable {
        public var accessPointOpen: Bool
        public var accessPointClosesAt: Double?
        public var accessPointReason: AccessPointReason?
        public var noConnectionSince: Double?
        public init(accessPointOpen: Bool, accessPointClosesAt: Double?, accessPointReason: AccessPointReason?,
                    noConnectionSince: Double?) {
            self.accessPointOpen = accessPointOpen
            self.accessPointClosesAt = accessPointClosesAt
            self.accessPointReason = accessPointReason
            self.noConnectionSince = noConnectionSince
        }
    }

    /// What the executor tells the policy about the configuration and the radio.
    public struct Observation: Sendable, Equatable {
        /// A client network is configured.
        public var configured: Bool
        /// `sta_ap` is configured.
        public var permanentAccessPoint: Bool
        /// The client is connected to the configured network.
        public var linkUp: Bool
        public init(configured: Bool, permanentAccessPoint: Bool = false, linkUp: Bool) {
            self.configured = configured
            self.permanentAccessPoint = permanentAccessPoint
            self.linkUp = linkUp
        }
    }

    public enum Event: Sendable, Equatable {
        /// The service started. `newBoot`: the runtime directory had no marker; `memory`: what the previous process
        /// of this boot left (nil on a new boot).
        case boot(now: Double, newBoot: Bool, memory: Memory?, Observation)
        case tick(now: Double, Observation)
        case connectFinished(now: Double, succeeded: Bool)
        case accessPointOpened(now: Double, succeeded: Bool)
        case accessPointClosed(now: Double, succeeded: Bool)
        case button(now: Double)
        /// `wifi_ap on` (true) / `off` (false).
        case accessPointRequested(now: Double, open: Bool)
        /// A `wifi_config` trial is about to take the radio (a single radio loses its access point).
        case trialStarted(now: Double)
        /// A `wifi_config` trial failed: the access point (re)opens.
        case trialFailed(now: Double, Observation)
        /// The configuration changed (wifi_config stored, factory reset).
        case configurationChanged(now: Double, Observation, reason: AccessPointReason?)

        /// When the event happened.
        public var now: Double {
            switch self {
            case .boot(let t, _, _, _), .tick(let t, _), .connectFinished(let t, _), .accessPointOpened(let t, _),
                .accessPointClosed(let t, _), .button(let t), .accessPointRequested(let t, _), .trialStarted(let t),
                .trialFailed(let t, _), .configurationChanged(let t, _, _):
                return t
            }
        }
    }

    public enum Action: Sendable, Equatable {
        case connect
        case openAccessPoint(reason: AccessPointReason)
        /// The access point is open: only its closing time changed (no radio call).
        case extendAccessPoint
        case closeAccessPoint
    }

    public let settings: Settings
    public private(set) var accessPointOpen = false
    public private(set) var accessPointClosesAt: Double?
    public private(set) var accessPointReason: AccessPointReason?
    public private(set) var connected = false
    public private(set) var noConnectionSince: Double?
    public private(set) var accessPointClosedAt: Double?
    public private(set) var nextRetryAt = 0.0
    public private(set) var retryDelay = WiFiPolicy.firstRetryDelay
    var configured = false
    var permanent = false
    /// The open that is in flight: its reason and closing time, applied when it succeeds.
    var pendingOpen: (reason: AccessPointReason, closesAt: Double?)?

    public init(settings: Settings) { self.settings = settings }

    public static func == (a: WiFiPolicy, b: WiFiPolicy) -> Bool { a.memory == b.memory && a.connected == b.connected }

    public var memory: Memory {
        Memory(accessPointOpen: accessPointOpen, accessPointClosesAt: accessPointClosesAt,
               accessPointReason: accessPointReason, noConnectionSince: noConnectionSince)
    }

    /// Seconds until the access point closes; nil when closed or open without limit.
    public func accessPointClosesIn(now: Double) -> Int? {
        guard accessPointOpen, let at = accessPointClosesAt else { return nil }
        return max(0, Int((at - now).rounded(.up)))
    }

    var radioFreeForClient: Bool { settings.concurrent || !accessPointOpen }

    func closingTime(now: Double, reason: AccessPointReason) -> Double? {
        if reason == .notConfigured || reason == .permanent { return nil }
        if permanent && settings.concurrent { return nil }
        if !configured { return nil }
        return now + settings.accessPointTimeout
    }

    mutating func open(now: Double, reason: AccessPointReason) -> [Action] {
        let closesAt = closingTime(now: now, reason: reason)
        if accessPointOpen {
            accessPointClosesAt = closesAt.flatMap { new in accessPointClosesAt.map { max($0, new) } }
            if reason != .permanent { accessPointReason = reason }
            return [.extendAccessPoint]
        }
        pendingOpen = (reason, closesAt)
        return [.openAccessPoint(reason: reason)]
    }

    mutating func observe(_ o: Observation, now: Double) {
        configured = o.configured
        permanent = o.permanentAccessPoint
        if o.configured && o.linkUp {
            if !connected {
                connected = true
                retryDelay = Self.firstRetryDelay
            }
            noConnectionSince = nil
        } else {
            connected = false
            if noConnectionSince == nil { noConnectionSince = now }
        }
    }

    public mutating func handle(_ event: Event) -> [Action] {
        switch event {
        case .boot(let now, let newBoot, let memory, let o):
            observe(o, now: now)
            nextRetryAt = now
            if !newBoot, let memory {
                accessPointOpen = memory.accessPointOpen
                accessPointClosesAt = memory.accessPointClosesAt
                accessPointReason = memory.accessPointOpen ? memory.accessPointReason : nil
                if !connected, let since = memory.noConnectionSince { noConnectionSince = min(since, now) }
                if accessPointOpen && !settings.concurrent && connected {
                    // The radio says the client is up: the access point cannot be.
                    accessPointOpen = false
                    accessPointClosesAt = nil
                    accessPointReason = nil
                }
            }
            var actions: [Action] = []
            if newBoot {
                actions += open(now: now, reason: o.configured ? .newBoot : .notConfigured)
            } else if !o.configured, !accessPointOpen {
                actions += open(now: now, reason: .notConfigured)
            } else if o.configured, o.permanentAccessPoint, settings.concurrent, !accessPointOpen {
                actions += open(now: now, reason: .permanent)
            }
            return actions + timers(now: now)

        case .tick(let now, let o):
            observe(o, now: now)
            return timers(now: now)

        case .connectFinished(let now, let succeeded):
            if succeeded {
                connected = true
                noConnectionSince = nil
                retryDelay = Self.firstRetryDelay
                if !settings.concurrent && accessPointOpen {
                    accessPointOpen = false
                    accessPointClosesAt = nil
                    accessPointReason = nil
                    accessPointClosedAt = now
                }
            } else {
                connected = false
                if noConnectionSince == nil { noConnectionSince = now }
                nextRetryAt = now + retryDelay
                retryDelay = min(retryDelay * 2, Self.maxRetryDelay)
            }
            return []

        case .accessPointOpened(let now, let succeeded):
            let pending = pendingOpen
            pendingOpen = nil
            guard succeeded else { return [] }
            accessPointOpen = true
            accessPointClosesAt = pending?.closesAt
            accessPointReason = pending?.reason
            if !settings.concurrent && connected {
                connected = false
                noConnectionSince = now
            }
            return []

        case .accessPointClosed(let now, let succeeded):
            guard succeeded else { return [] }
            accessPointOpen = false
            accessPointClosesAt = nil
            accessPointReason = nil
            accessPointClosedAt = now
            // The client may use the radio again right away.
            nextRetryAt = min(nextRetryAt, now)
            retryDelay = Self.firstRetryDelay
            return []

        case .button(let now):
            return open(now: now, reason: .button)

        case .accessPointRequested(let now, let wanted):
            if wanted { return open(now: now, reason: .command) }
            return accessPointOpen ? [.closeAccessPoint] : []

        case .trialStarted(let now):
            if !settings.concurrent && accessPointOpen {
                accessPointOpen = false
                accessPointClosesAt = nil
                accessPointReason = nil
                accessPointClosedAt = now
            }
            return []

        case .trialFailed(let now, let o):
            observe(o, now: now)
            nextRetryAt = now
            retryDelay = Self.firstRetryDelay
            return open(now: now, reason: .configFailed)

        case .configurationChanged(let now, let o, let reason):
            observe(o, now: now)
            if let reason {
                if accessPointOpen {
                    // New settings (e.g. the default password after a reset) need a fresh start.
                    pendingOpen = (reason, closingTime(now: now, reason: reason))
                    return [.closeAccessPoint, .openAccessPoint(reason: reason)]
                }
                return open(now: now, reason: reason)
            }
            if accessPointOpen {
                if o.permanentAccessPoint && settings.concurrent {
                    accessPointClosesAt = nil
                    accessPointReason = .permanent
                } else if accessPointClosesAt == nil, o.configured {
                    accessPointClosesAt = now + settings.accessPointTimeout
                    if accessPointReason == .notConfigured || accessPointReason == .permanent {
                        accessPointReason = .command
                    }
                }
                return []
            }
            if o.permanentAccessPoint && settings.concurrent { return open(now: now, reason: .permanent) }
            return []
        }
    }

    /// Access point timeout, client retries, reopening.
    mutating func timers(now: Double) -> [Action] {
        var actions: [Action] = []
        // An open asked for in this same step counts as open: on a single radio it takes the radio.
        var openNow = accessPointOpen || pendingOpen != nil
        if accessPointOpen, let closesAt = accessPointClosesAt, now >= closesAt, configured {
            actions.append(.closeAccessPoint)
            openNow = pendingOpen != nil
        }
        if configured, !connected, settings.concurrent || !openNow, now >= nextRetryAt {
            // The next tick decides on reopening, with the result of this attempt.
            return actions + [.connect]
        }
        if !openNow {
            if !configured {
                actions += open(now: now, reason: .notConfigured)
            } else if !connected, let since = noConnectionSince,
                now - max(since, accessPointClosedAt ?? since) >= settings.reopenAfterNoConnection
            {
                actions += open(now: now, reason: .unreachable)
            }
        }
        return actions
    }
}
