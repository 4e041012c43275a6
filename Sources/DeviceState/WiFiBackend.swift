/// A network seen by a scan.
public struct WiFiNetwork: Sendable, Equatable, Codable {
    public var ssid: String
    public var bssid: String
    /// 0...100 as NetworkManager reports it.
    public var signalPercent: Int
    /// Security as shown to users: "" / "open", "WPA2", "WPA1 WPA2", "WPA3", …
    public var security: String
    public var channel: Int
    public var frequencyMHz: Int

    public init(ssid: String, bssid: String, signalPercent: Int, security: String, channel: Int, frequencyMHz: Int) {
        self.ssid = ssid
        self.bssid = bssid
        self.signalPercent = signalPercent
        self.security = security
        self.channel = channel
        self.frequencyMHz = frequencyMHz
    }

    /// NetworkManager derives its percentage from dBm linearly between -100 and -50;
    /// this is the inverse, good enough for "-63"-style display.
    public var signalDBm: Int { signalPercent / 2 - 100 }

    public var isOpen: Bool { security.isEmpty || security == "--" }
}

public enum WiFiLinkState: String, Sendable, Equatable, Codable {
    case disconnected, connecting, connected, unavailable
}

/// The client side of the radio right now.
public struct WiFiLinkStatus: Sendable, Equatable {
    public var state: WiFiLinkState
    public var ssid: String?
    public var rssiDBm: Int?
    /// IPv4 address without prefix length.
    public var ipv4: String?
    /// MAC of the access point the board is connected to.
    public var bssid: String?

    public init(state: WiFiLinkState, ssid: String? = nil, rssiDBm: Int? = nil, ipv4: String? = nil, bssid: String? = nil) {
        self.state = state
        self.ssid = ssid
        self.rssiDBm = rssiDBm
        self.ipv4 = ipv4
        self.bssid = bssid
    }

    public static let disconnected = WiFiLinkStatus(state: .disconnected)
}

/// Why joining a network failed, in words field staff understand.
public enum WiFiConnectFailure: Error, Sendable, Equatable, CustomStringConvertible {
    case wrongPassword
    case networkNotFound(String)
    case timeout(seconds: Int)
    case invalidInput(String)
    case radioBusy(String)
    case backend(String)

    public var description: String {
        switch self {
        case .wrongPassword: return "wrong password"
        case .networkNotFound(let ssid): return "network \"\(ssid)\" not found"
        case .timeout(let s): return "no connection within \(s) seconds"
        case .invalidInput(let why): return why
        case .radioBusy(let why): return why
        case .backend(let why): return why
        }
    }
}

/// Errors of the backend outside of joining a network (scan, status, access point).
public struct WiFiBackendError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// The radio, as the `WiFiManager` sees it. Implementations: `NetworkManagerBackend`
/// (real boards, through nmcli) and `SimulatedWiFiBackend` (`--wifi sim`, tests).
///
/// Calls block (a connect may take `timeout` seconds); call them off the event loop.
public protocol WiFiBackend: AnyObject, Sendable {
    /// The WiFi interface, e.g. "wlan0".
    var interfaceName: String { get }
    /// MAC of the WiFi interface, "DC:A6:32:01:02:03".
    func macAddress() throws -> String
    /// Whether the set-up access point and the client connection can run at the same
    /// time. When false, starting one stops the other, and `sta_ap` is refused.
    var supportsConcurrentAPAndClient: Bool { get }

    /// Visible networks, strongest first, one entry per SSID, hidden networks left out.
    func scan() throws -> [WiFiNetwork]
    /// Joins `ssid` and waits up to `timeout` seconds for an address. On success the
    /// network is remembered by the system (autoconnect); on failure nothing is kept.
    func connect(ssid: String, password: Secret?, timeout: Int) -> Result<Void, WiFiConnectFailure>
    /// The client connection right now.
    func status() throws -> WiFiLinkStatus
    /// Drops the client connection and forgets its profile.
    func forgetClient() throws

    /// Opens (or re-opens with new settings) the WPA2 set-up access point.
    func startAccessPoint(ssid: String, password: Secret) throws
    func stopAccessPoint() throws
    /// The board's address on the access point network (what the phone browses to).
    var accessPointAddress: String { get }
}


/// "meterextension:XXXX" with the last four hex digits of the WiFi MAC, uppercase.
public func accessPointSSID(forMAC mac: String) -> String {
    let hex = mac.uppercased().filter { $0.isHexDigit }
    return "meterextension:\(hex.suffix(4))"
}
