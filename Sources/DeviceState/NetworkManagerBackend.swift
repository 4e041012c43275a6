import Platform

/// The radio through NetworkManager's command line client, in terse machine-readable mode.
///
/// Two connection profiles belong to the firmware and nothing else: `meterext-ap` (the
/// set-up access point, `ipv4.method shared` so NetworkManager runs DHCP for the phone)
/// and `meterext-client` (the local network, autoconnect with unlimited retries so
/// NetworkManager itself keeps trying after a power cut). Both are recreated from the
/// state store when needed; the store, not NetworkManager, is the source of truth.
///
/// On `wlan0` alone the radio runs either the access point or the client, not both. The Broadcom radios of Pi
/// 3/4/5/Zero 2 W can run both on one channel through a virtual interface (`uap0`, created as root by
/// `meterext wifi prepare-radio` before the service starts, see `IWRadio`); `detectedConfiguration` picks it up and
/// the access point runs there, on the client's channel, while the client stays on `wlan0`. Only then is `sta_ap`
/// possible.
///
/// Known limit: passwords reach nmcli as arguments, visible to local root in
/// /proc/<pid>/cmdline for the milliseconds the call lasts. They are never logged.
public final class NetworkManagerBackend: WiFiBackend {
    public struct Configuration: Sendable {
        public var interface: String
        public var accessPointInterface: String?
        /// Program name looked up on the environment's PATH, or an absolute path.
        public var nmcli: String
        public var accessPointAddress: String
        /// Limit for nmcli calls that do not wait for a connection.
        public var commandTimeout: Double

        public init(
            interface: String = "wlan0", accessPointInterface: String? = nil, nmcli: String = "nmcli",
            accessPointAddress: String = "10.42.0.1", commandTimeout: Double = 20
        ) {
            self.interface = interface
            self.accessPointInterface = accessPointInterface
            self.nmcli = nmcli
            self.accessPointAddress = accessPointAddress
            self.commandTimeout = commandTimeout
        }
    }

    /// `uap0` when it exists (the radio can run access point and client at once), else `wlan0` alone.
    public static func detectedConfiguration(iw: IWRadio = IWRadio()) -> (Configuration, String) {
        var c = Configuration()
        if iw.exists(IWRadio.defaultAccessPointInterface) {
            c.accessPointInterface = IWRadio.defaultAccessPointInterface
            return (c, "wifi: access point on \(IWRadio.defaultAccessPointInterface) beside the client on \(c.interface) (concurrent radio)")
        }
        return (c, "wifi: single radio: no \(IWRadio.defaultAccessPointInterface); the access point and the client on "
                + "\(c.interface) take turns (`meterext wifi prepare-radio` tells whether this radio could do both)")
    }

    public static let accessPointConnection = "meterext-ap"
    public static let clientConnection = "meterext-client"

    public let configuration: Configuration
    let runner: Subprocess

    public init(configuration: Configuration = Configuration(), environment: [String]? = nil) {
        self.configuration = configuration
        self.runner = Subprocess(environment: environment)
    }

    public var interfaceName: String { configuration.interface }
    public var accessPointAddress: String { configuration.accessPointAddress }
    public var supportsConcurrentAPAndClient: Bool {
        configuration.accessPointInterface.map { $0 != configuration.interface } ?? false
    }
    var apInterface: String { configuration.accessPointInterface ?? configuration.interface }

    // MARK: - Queries

    public func macAddress() throws -> String {
        let out = try query(["-t", "-e", "yes", "-f", "GENERAL.HWADDR", "device", "show", .plain(interfaceName)])
        guard let mac = NmcliTerse.properties(out).first(where: { $0.name == "GENERAL.HWADDR" })?.value,
            !mac.isEmpty
        else { throw WiFiBackendError("nmcli reported no MAC address for \(interfaceName)") }
        return mac.uppercased()
    }

    public func scan() throws -> [WiFiNetwork] {
        let out = try query([
            "-t", "-e", "yes", "-f", "IN-USE,BSSID,SSID,CHAN,FREQ,SIGNAL,SECURITY",
            "device", "wifi", "list", "--rescan", "yes", "ifname", .plain(interfaceName),
        ])
        var best: [String: WiFiNetwork] = [:]
        for row in NmcliTerse.rows(out) where row.count >= 7 {
            let ssid = row[2]
            if ssid.isEmpty || ssid.hasPrefix("meterextension:") { continue }
            let network = WiFiNetwork(
                ssid: ssid, bssid: row[1].uppercased(), signalPercent: Int(row[5]) ?? 0,
                security: row[6] == "--" ? "" : row[6], channel: Int(row[3]) ?? 0,
                frequencyMHz: Int(row[4].split(separator: " ").first ?? "") ?? 0)
            if let seen = best[ssid], seen.signalPercent >= network.signalPercent { continue }
            best[ssid] = network
        }
        return best.values.sorted { ($0.signalPercent, $1.ssid) > ($1.signalPercent, $0.ssid) }
    }

    public func status() throws -> WiFiLinkStatus {
        let out = try query([
            "-t", "-e", "yes", "-f", "GENERAL.STATE,GENERAL.CONNECTION,IP4.ADDRESS",
            "device", "show", .plain(interfaceName),
        ])
        let props = NmcliTerse.properties(out)
        let stateCode = Int(props.first { $0.name == "GENERAL.STATE" }?.value.split(separator: " ").first ?? "") ?? 0
        let connection = props.first { $0.name == "GENERAL.CONNECTION" }?.value ?? ""
        // The access point on the same interface is not a client connection.
        if connection == Self.accessPointConnection { return .disconnected }
        let state: WiFiLinkState
        switch stateCode {
        case 100: state = .connected
        case 40..<100: state = .connecting
        case 30: state = .disconnected
        default: state = .unavailable
        }
        guard state == .connected else { return WiFiLinkStatus(state: state) }
        var status = WiFiLinkStatus(state: state)
        if let address = props.first(where: { $0.name.hasPrefix("IP4.ADDRESS") })?.value {
            status.ipv4 = String(address.split(separator: "/").first ?? "")
        }
        let list = try query([
            "-t", "-e", "yes", "-f", "IN-USE,BSSID,SSID,SIGNAL",
            "device", "wifi", "list", "--rescan", "no", "ifname", .plain(interfaceName),
        ])
        if let row = NmcliTerse.rows(list).first(where: { $0.count >= 4 && $0[0] == "*" }) {
            status.bssid = row[1].uppercased()
            status.ssid = row[2]
            status.rssiDBm = (Int(row[3]) ?? 0) / 2 - 100
        }
        return status
    }

    // MARK: - Client

    public func connect(ssid: String, password: Secret?, timeout: Int) -> Result<Void, WiFiConnectFailure> {
        do {
            try deleteConnection(Self.clientConnection)
            var add: [CommandArgument] = [
                "connection", "add", "type", "wifi", "ifname", .plain(interfaceName),
                "con-name", .plain(Self.clientConnection), "autoconnect", "yes",
                "connection.autoconnect-retries", "0", "ssid", .plain(ssid),
            ]
            if let password, !password.isEmpty {
                add += ["wifi-sec.key-mgmt", "wpa-psk", "wifi-sec.psk", .secret(password)]
            }
            let added = try nmcli(add, timeout: configuration.commandTimeout)
            if added.exitCode != 0 {
                return .failure(.invalidInput("the network settings were refused: \(Self.message(added))"))
            }
            let up = try nmcli(
                ["--wait", .plain(String(timeout)), "connection", "up", .plain(Self.clientConnection)],
                timeout: Double(timeout) + configuration.commandTimeout)
            if up.exitCode == 0 && !up.timedOut { return .success(()) }
            let failure = Self.connectFailure(up, ssid: ssid, timeout: timeout)
            // Nothing of a failed attempt is kept, so NetworkManager does not keep trying it.
            try? deleteConnection(Self.clientConnection)
            return .failure(failure)
        } catch {
            return .failure(.backend("\(error)"))
        }
    }

    static func connectFailure(_ r: ProcessResult, ssid: String, timeout: Int) -> WiFiConnectFailure {
        let text = (r.stderr + r.stdout).lowercased()
        if r.timedOut || r.exitCode == 3 || text.contains("timeout expired") { return .timeout(seconds: timeout) }
        if text.contains("secrets were required") || text.contains("no secrets") || text.contains("(7)")
            || text.contains("supplicant") || text.contains("psk")
        {
            return .wrongPassword
        }
        if r.exitCode == 10 || text.contains("could not be found") || text.contains("no network with ssid") {
            return .networkNotFound(ssid)
        }
        if r.exitCode == 8 { return .backend("NetworkManager is not running") }
        return .backend("connection failed: \(message(r))")
    }

    public func forgetClient() throws {
        try deleteConnection(Self.clientConnection)
    }

    // MARK: - Access point

    /// The client's channel when it is connected (a concurrent access point must use it: `#channels <= 1`).
    func clientChannel() -> Int? {
        guard let list = try? query([
            "-t", "-e", "yes", "-f", "IN-USE,CHAN", "device", "wifi", "list", "--rescan", "no", "ifname", .plain(interfaceName),
        ]) else { return nil }
        return NmcliTerse.rows(list).first { $0.count >= 2 && $0[0] == "*" }.flatMap { Int($0[1]) }
    }

    public func startAccessPoint(ssid: String, password: Secret) throws {
        try deleteConnection(Self.accessPointConnection)
        var band: [CommandArgument] = ["802-11-wireless.band", "bg"]
        if supportsConcurrentAPAndClient, let channel = clientChannel() {
            band = ["802-11-wireless.band", channel <= 14 ? "bg" : "a", "802-11-wireless.channel", .plain(String(channel))]
        }
        let add = try nmcli(
            [
                "connection", "add", "type", "wifi", "ifname", .plain(apInterface),
                "con-name", .plain(Self.accessPointConnection), "autoconnect", "no", "ssid", .plain(ssid),
                "mode", "ap"] + band + ["ipv4.method", "shared",
                "ipv4.addresses", .plain("\(configuration.accessPointAddress)/24"),
                "wifi-sec.key-mgmt", "wpa-psk", "wifi-sec.proto", "rsn", "wifi-sec.pairwise", "ccmp",
                "wifi-sec.group", "ccmp", "wifi-sec.psk", .secret(password),
            ], timeout: configuration.commandTimeout)
        guard add.exitCode == 0 else {
            throw WiFiBackendError("cannot create the access point: \(Self.message(add))")
        }
        let up = try nmcli(
            ["--wait", "15", "connection", "up", .plain(Self.accessPointConnection)],
            timeout: 15 + configuration.commandTimeout)
        guard up.exitCode == 0 else {
            throw WiFiBackendError("cannot open the access point: \(Self.message(up))")
        }
    }

    public func stopAccessPoint() throws {
        let down = try nmcli(["connection", "down", .plain(Self.accessPointConnection)], timeout: configuration.commandTimeout)
        // 10: not active / not there — already stopped.
        guard down.exitCode == 0 || down.exitCode == 10 else {
            throw WiFiBackendError("cannot close the access point: \(Self.message(down))")
        }
    }

    // MARK: - nmcli

    func deleteConnection(_ name: String) throws {
        let r = try nmcli(["connection", "delete", .plain(name)], timeout: configuration.commandTimeout)
        guard r.exitCode == 0 || r.exitCode == 10 else {
            throw WiFiBackendError("cannot delete connection \(name): \(Self.message(r))")
        }
    }

    func query(_ args: [CommandArgument]) throws -> String {
        let r = try nmcli(args, timeout: configuration.commandTimeout)
        guard r.exitCode == 0, !r.timedOut else {
            throw WiFiBackendError("nmcli \(args.map(\.description).joined(separator: " ")) failed: \(Self.message(r))")
        }
        return r.stdout
    }

    func nmcli(_ args: [CommandArgument], timeout: Double) throws -> ProcessResult {
        do {
            return try runner.run(configuration.nmcli, args, timeout: timeout)
        } catch let error as SystemError where error.operation == "find program" {
            throw WiFiBackendError("nmcli not found (is NetworkManager installed?)")
        }
    }

    static func message(_ r: ProcessResult) -> String {
        if r.timedOut { return "nmcli did not answer in time" }
        let text = r.stderr.isEmpty ? r.stdout : r.stderr
        let line = text.split(separator: "\n").first.map(String.init) ?? ""
        let trimmed = line.hasPrefix("Error: ") ? String(line.dropFirst(7)) : line
        return trimmed.isEmpty ? "nmcli exit status \(r.exitCode.map(String.init) ?? "signal")" : trimmed
    }
}
