import FoundationEssentials
import Platform
import Synchronization

/// An in-memory radio for `make run`, `--wifi sim` and tests.
///
/// Rules (documented for people trying the set-up page without a board):
/// - the networks are `networks` (by default "HomeNet" WPA2 password "homenet-pass",
///   "Office-5G" WPA2 password "office-pass", "CafeOpen" open);
/// - `connect` succeeds when the SSID is visible and, for a secured network, the password
///   has 8 or more characters and equals the network's password. A secured network with a
///   password shorter than 8 characters is refused as invalid input, a wrong password is
///   "wrong password", an unknown SSID "network not found";
/// - with `supportsConcurrentAPAndClient == false` (the default, like a Raspberry Pi),
///   starting the access point drops the client and connecting drops the access point;
/// - `reachable = false` makes every network vanish (router off), for back-off tests;
/// - with `persistPath` (the service puts it in its runtime directory) the radio's state survives a service restart
///   and is gone after a reboot, as NetworkManager's is: `--wifi sim` shows what a restart does on a board.
public final class SimulatedWiFiBackend: WiFiBackend {
    public struct Network: Sendable {
        public var info: WiFiNetwork
        public var password: String?
        public init(_ info: WiFiNetwork, password: String?) {
            self.info = info
            self.password = password
        }
    }

    public struct State: Sendable {
        public var networks: [Network]
        public var reachable = true
        /// false: the radio is gone (USB dongle pulled, driver crash): every call fails.
        public var present = true
        public var client: (ssid: String, password: Secret?)?
        public var connected = false
        public var accessPoint: (ssid: String, password: Secret)?
        /// Every call, in order, e.g. "connect HomeNet", "startAccessPoint meterextension:0203".
        public var calls: [String] = []
    }

    public static let defaultNetworks: [Network] = [
        Network(WiFiNetwork(ssid: "HomeNet", bssid: "02:00:00:00:00:01", signalPercent: 74, security: "WPA2", channel: 6, frequencyMHz: 2437), password: "homenet-pass"),
        Network(WiFiNetwork(ssid: "Office-5G", bssid: "02:00:00:00:00:02", signalPercent: 52, security: "WPA2", channel: 36, frequencyMHz: 5180), password: "office-pass"),
        Network(WiFiNetwork(ssid: "CafeOpen", bssid: "02:00:00:00:00:03", signalPercent: 31, security: "", channel: 11, frequencyMHz: 2462), password: nil),
    ]

    public let interfaceName = "wlan0"
    public let accessPointAddress = "10.42.0.1"
    public let supportsConcurrentAPAndClient: Bool
    let mac: String
    public let state: Mutex<State>

    let persistPath: String?

    struct Saved: Codable {
        var clientSSID: String?
        var clientPassword: Secret?
        var connected: Bool
        var accessPointSSID: String?
        var accessPointPassword: Secret?
    }

    public init(mac: String = "DC:A6:32:01:02:03", networks: [Network] = SimulatedWiFiBackend.defaultNetworks,
                concurrent: Bool = false, persistPath: String? = nil) {
        self.mac = mac
        self.supportsConcurrentAPAndClient = concurrent
        self.persistPath = persistPath
        var initial = State(networks: networks)
        if let persistPath, case .some(.some(let bytes)) = try? AtomicFile.read(persistPath),
            let saved = try? JSONDecoder().decode(Saved.self, from: Data(bytes))
        {
            if let ssid = saved.clientSSID { initial.client = (ssid, saved.clientPassword) }
            initial.connected = saved.connected
            if let ssid = saved.accessPointSSID, let pw = saved.accessPointPassword { initial.accessPoint = (ssid, pw) }
        }
        self.state = Mutex(initial)
    }

    func save(_ s: State) {
        guard let persistPath else { return }
        let saved = Saved(clientSSID: s.client?.ssid, clientPassword: s.client?.password, connected: s.connected,
                          accessPointSSID: s.accessPoint?.ssid, accessPointPassword: s.accessPoint?.password)
        if let data = try? JSONEncoder().encode(saved) { try? AtomicFile.write(Array(data), to: persistPath) }
    }

    /// Whether the simulated access point is up (tests).
    public var accessPointIsUp: Bool { state.withLock { $0.accessPoint != nil } }

    public func macAddress() throws -> String { mac }

    static let gone = WiFiBackendError("no WiFi interface wlan0 (the radio is gone)")

    public func scan() throws -> [WiFiNetwork] {
        try state.withLock { s in
            guard s.present else { throw Self.gone }
            s.calls.append("scan")
            return s.reachable ? s.networks.map(\.info).sorted { $0.signalPercent > $1.signalPercent } : []
        }
    }

    public func connect(ssid: String, password: Secret?, timeout: Int) -> Result<Void, WiFiConnectFailure> {
        state.withLock { s in
            s.calls.append("connect \(ssid)")
            guard s.present else { return .failure(.backend(Self.gone.message)) }
            s.connected = false
            s.client = nil
            if !supportsConcurrentAPAndClient { s.accessPoint = nil }
            defer { save(s) }
            guard s.reachable, let network = s.networks.first(where: { $0.info.ssid == ssid }) else {
                return .failure(.networkNotFound(ssid))
            }
            if let expected = network.password {
                let given = password?.revealed ?? ""
                if given.count < 8 { return .failure(.invalidInput("password must have 8 to 63 characters")) }
                if given != expected { return .failure(.wrongPassword) }
            }
            s.client = (ssid, password)
            s.connected = true
            save(s)
            return .success(())
        }
    }

    public func status() throws -> WiFiLinkStatus {
        try state.withLock { s in
            guard s.present else { throw Self.gone }
            guard s.connected, s.reachable, let client = s.client,
                let network = s.networks.first(where: { $0.info.ssid == client.ssid })
            else { return .disconnected }
            return WiFiLinkStatus(
                state: .connected, ssid: client.ssid, rssiDBm: network.info.signalDBm, ipv4: "192.168.1.50",
                bssid: network.info.bssid)
        }
    }

    public func forgetClient() throws {
        state.withLock { s in
            s.calls.append("forgetClient")
            s.client = nil
            s.connected = false
            save(s)
        }
    }

    public func startAccessPoint(ssid: String, password: Secret) throws {
        try state.withLock { s in
            s.calls.append("startAccessPoint \(ssid)")
            guard s.present else { throw Self.gone }
            s.accessPoint = (ssid, password)
            if !supportsConcurrentAPAndClient { s.connected = false }
            save(s)
        }
    }

    public func stopAccessPoint() throws {
        state.withLock { s in
            s.calls.append("stopAccessPoint")
            s.accessPoint = nil
            // Like NetworkManager's autoconnect: the remembered network comes back.
            if s.client != nil, s.reachable { s.connected = true }
            save(s)
        }
    }

    /// Pulls (false) or plugs back (true) the radio: while gone every call fails and the connection and access
    /// point are lost.
    public func setPresent(_ present: Bool) {
        state.withLock { s in
            s.present = present
            if !present {
                s.connected = false
                s.accessPoint = nil
            }
        }
    }

    /// Router power: false makes all networks vanish and drops the connection.
    public func setReachable(_ reachable: Bool) {
        state.withLock { s in
            s.reachable = reachable
            if !reachable { s.connected = false }
        }
    }
}
