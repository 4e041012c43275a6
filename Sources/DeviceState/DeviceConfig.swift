import FoundationEssentials

/// How the board uses its radio once set up (the `mode` of `wifi_config`).
public enum WiFiMode: String, Codable, Sendable, Equatable {
    /// Client of the local network; the set-up access point only opens for its time window.
    case sta
    /// Client of the local network and the set-up access point, permanently. Needs a radio
    /// that can run both at once (`WiFiBackend.supportsConcurrentAPAndClient`).
    case staAP = "sta_ap"
}

/// The local network the board joins as a client.
public struct WiFiClientConfig: Codable, Sendable, Equatable, CustomStringConvertible {
    public var ssid: String
    /// nil or empty for an open network.
    public var password: Secret?
    public var mode: WiFiMode

    public init(ssid: String, password: Secret?, mode: WiFiMode = .sta) {
        self.ssid = ssid
        self.password = password
        self.mode = mode
    }

    public var description: String {
        "WiFiClientConfig(ssid: \(ssid), password: \(password == nil ? "none" : "<redacted>"), mode: \(mode.rawValue))"
    }
}

/// The set-up access point.
public struct AccessPointSettings: Codable, Sendable, Equatable {
    /// The documented default WPA2 password of a MeterExtension #1 access point.
    public static let defaultPassword = Secret("welinkwmlink")

    /// Per-device password set by the installer; nil means `defaultPassword`.
    public var password: Secret?
    /// How long the access point stays open after it opened (start, request, button).
    public var timeoutSeconds: Int
    /// With no client connection for this long (and the access point closed), it reopens,
    /// so a board whose network disappeared can always be reached again.
    public var reopenAfterNoConnectionSeconds: Int

    public init(password: Secret? = nil, timeoutSeconds: Int = 600, reopenAfterNoConnectionSeconds: Int = 900) {
        self.password = password
        self.timeoutSeconds = timeoutSeconds
        self.reopenAfterNoConnectionSeconds = reopenAfterNoConnectionSeconds
    }

    public var effectivePassword: Secret { password.flatMap { $0.isEmpty ? nil : $0 } ?? Self.defaultPassword }

    enum CodingKeys: String, CodingKey { case password, timeoutSeconds, reopenAfterNoConnectionSeconds }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = AccessPointSettings()
        password = try c.decodeIfPresent(Secret.self, forKey: .password)
        timeoutSeconds = try c.decodeIfPresent(Int.self, forKey: .timeoutSeconds) ?? d.timeoutSeconds
        reopenAfterNoConnectionSeconds =
            try c.decodeIfPresent(Int.self, forKey: .reopenAfterNoConnectionSeconds) ?? d.reopenAfterNoConnectionSeconds
    }
}

/// Everything the installer configured. Stored in `<state-dir>/config.json`.
///
/// Decoding is tolerant: a missing key takes its default, so files written by older (or
/// newer) firmware still load.
public struct DeviceConfig: Codable, Sendable, Equatable {
    public static let currentVersion = 1

    public var version: Int
    public var wifi: WiFiClientConfig?
    public var accessPoint: AccessPointSettings
    /// Decryption key from `meter_setkey`. Kept, never returned by the API.
    public var meterKey: Secret?
    /// Bearer token for the API, generated at first start.
    public var apiToken: Secret
    /// When true, commands that change the board need the token unless they come from the board itself or the
    /// open set-up access point. On by default; an installer turns it off (`meterext token --require off`) for
    /// strict MeterExtension #1 compatibility.
    public var tokenRequired: Bool

    public init(apiToken: Secret) {
        version = Self.currentVersion
        wifi = nil
        accessPoint = AccessPointSettings()
        meterKey = nil
        self.apiToken = apiToken
        tokenRequired = true
    }

    enum CodingKeys: String, CodingKey { case version, wifi, accessPoint, meterKey, apiToken, tokenRequired }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        version = try c.decode(Int.self, forKey: .version)
        wifi = try c.decodeIfPresent(WiFiClientConfig.self, forKey: .wifi)
        accessPoint = try c.decodeIfPresent(AccessPointSettings.self, forKey: .accessPoint) ?? AccessPointSettings()
        meterKey = try c.decodeIfPresent(Secret.self, forKey: .meterKey)
        apiToken = try c.decode(Secret.self, forKey: .apiToken)
        tokenRequired = try c.decodeIfPresent(Bool.self, forKey: .tokenRequired) ?? true
    }
}

/// What the board learned while running and wants to remember across restarts.
/// Stored in `<state-dir>/state.json`.
public struct DeviceRuntimeState: Codable, Sendable, Equatable {
    public static let currentVersion = 1

    public var version: Int
    /// Why the last WiFi connection attempt failed, in plain words.
    public var lastWiFiFailure: String?
    /// The network the board was last connected to.
    public var lastConnectedSSID: String?
    /// Incremented at every start.
    public var startCount: Int

    public init() {
        version = Self.currentVersion
        lastWiFiFailure = nil
        lastConnectedSSID = nil
        startCount = 0
    }

    enum CodingKeys: String, CodingKey { case version, lastWiFiFailure, lastConnectedSSID, startCount }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        version = try c.decode(Int.self, forKey: .version)
        lastWiFiFailure = try c.decodeIfPresent(String.self, forKey: .lastWiFiFailure)
        lastConnectedSSID = try c.decodeIfPresent(String.self, forKey: .lastConnectedSSID)
        startCount = try c.decodeIfPresent(Int.self, forKey: .startCount) ?? 0
    }
}
