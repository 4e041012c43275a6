import Platform
import FoundationEssentials
import MeterHardware
import ModbusCore

/// The installer's `/etc/meterext/meterext.json`. Every key mirrors a `meterext run` flag and every key is optional:
/// the CLI merges flags over this file over the board profile over built-in defaults.
public struct RunConfigFile: Sendable, Equatable, Decodable {
    public typealias Parity = LineSettings.Parity
    /// `sim`: a simulated single radio (like a Pi's: access point or client); `sim-concurrent`: a simulated radio
    /// that runs both at once (like a Pi with `uap0`).
    public enum WiFiBackend: String, Sendable, Equatable, Decodable {
        case networkmanager, sim
        case simConcurrent = "sim-concurrent"
    }

    /// Baud rates the KPM33B offers (register 0x0002); anything else can never talk to it.
    public static var supportedBauds: [Int] { LineSettings.meterBaudRates }

    public var serial: String?
    public var baud: Int?
    public var parity: Parity?
    /// The first meter's address (`address` as a number, or the first of a list).
    public var address: Int?
    /// Issue 17: every meter on the bus, in the order given (`"address": [1, 2, 3]`); nil when the file has none.
    public var addresses: [Int]?
    /// Issue 17: `modbus_tcp` (`HOST:PORT`) and `modbus_tcp_allow` (addresses/prefixes that may write).
    public var modbusTCP: ListenAddress?
    public var modbusTCPAllow: [String]?
    public var direction: DirectionMode?
    public var listen: ListenAddress?
    public var stateDir: String?
    public var wifi: WiFiBackend?
    public var board: String?
    public var logLevel: LogLevel?
    /// Extra names the board is reached under (besides its hostname and hostname.local): requests that change the
    /// board may use them in `Host` (DNS-rebinding protection).
    public var hostNames: [String]?
    /// Phases ("A", "B", "C") wired for import only: export on them raises 1013 Current Reverse (issue 14).
    public var importOnlyPhases: [String]?
    /// The board sells energy prepaid: an exhausted prepaid-energy register (0x000E) with the relay open is 1001.
    public var prepaid: Bool?
    // Issue 16 (fleet): the MQTT uplink, as `--mqtt…` (the URL may hold a password: the file is mode 0600/0640).
    public var mqtt: String?
    public var mqttPrefix: String?
    public var mqttLiveInterval: Double?
    public var mqttCommands: Bool?
    public var mqttCA: String?
    public var mqttCert: String?
    public var mqttKey: String?
    public var mqttClientID: String?
    /// Load-profile interval in seconds (issue 15; default 900).
    public var profileInterval: Int?

    enum CodingKeys: String, CodingKey, CaseIterable {
        case serial, baud, parity, address, direction, listen, wifi, board
        case stateDir = "state_dir"
        case logLevel = "log_level"
        case hostNames = "host_names"
        case importOnlyPhases = "import_only_phases"
        case prepaid
        case mqtt, mqttPrefix = "mqtt_prefix", mqttLiveInterval = "mqtt_live_interval", mqttCommands = "mqtt_commands"
        case mqttCA = "mqtt_ca", mqttCert = "mqtt_cert", mqttKey = "mqtt_key", mqttClientID = "mqtt_client_id"
        case profileInterval = "profile_interval"
        case modbusTCP = "modbus_tcp"
        case modbusTCPAllow = "modbus_tcp_allow"
    }

    public init(
        serial: String? = nil, baud: Int? = nil, parity: Parity? = nil, address: Int? = nil,
        direction: DirectionMode? = nil, listen: ListenAddress? = nil, stateDir: String? = nil,
        wifi: WiFiBackend? = nil, board: String? = nil, logLevel: LogLevel? = nil
    ) {
        self.serial = serial
        self.baud = baud
        self.parity = parity
        self.address = address
        self.addresses = address.map { [$0] }
        self.direction = direction
        self.listen = listen
        self.stateDir = stateDir
        self.wifi = wifi
        self.board = board
        self.logLevel = logLevel
    }

    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(in: decoder, known: CodingKeys.allCases.map(\.rawValue))
        let c = try decoder.container(keyedBy: CodingKeys.self)
        serial = try c.decodeIfPresent(String.self, forKey: .serial)
        baud = try c.decodeIfPresent(Int.self, forKey: .baud)
        parity = try c.decodeIfPresent(Parity.self, forKey: .parity)
        // Issue 17: one address or a list of them.
        if let list = try? c.decodeIfPresent([Int].self, forKey: .address) {
            guard !list.isEmpty, Set(list).count == list.count else {
                throw DecodingError.dataCorruptedError(
                    forKey: .address, in: c, debugDescription: "the address list must be non-empty without repeats")
            }
            addresses = list
        } else {
            addresses = try c.decodeIfPresent(Int.self, forKey: .address).map { [$0] }
        }
        address = addresses?.first
        modbusTCP = try c.decodeIfPresent(ListenAddress.self, forKey: .modbusTCP)
        modbusTCPAllow = try c.decodeIfPresent([String].self, forKey: .modbusTCPAllow)
        direction = try c.decodeParsedIfPresent(DirectionMode.init(parsing:), forKey: .direction)
        listen = try c.decodeIfPresent(ListenAddress.self, forKey: .listen)
        stateDir = try c.decodeIfPresent(String.self, forKey: .stateDir)
        wifi = try c.decodeIfPresent(WiFiBackend.self, forKey: .wifi)
        board = try c.decodeIfPresent(String.self, forKey: .board)
        logLevel = try c.decodeIfPresent(LogLevel.self, forKey: .logLevel)
        hostNames = try c.decodeIfPresent([String].self, forKey: .hostNames)
        importOnlyPhases = try c.decodeIfPresent([String].self, forKey: .importOnlyPhases)
        prepaid = try c.decodeIfPresent(Bool.self, forKey: .prepaid)
        mqtt = try c.decodeIfPresent(String.self, forKey: .mqtt)
        mqttPrefix = try c.decodeIfPresent(String.self, forKey: .mqttPrefix)
        mqttLiveInterval = try c.decodeIfPresent(Double.self, forKey: .mqttLiveInterval)
        mqttCommands = try c.decodeIfPresent(Bool.self, forKey: .mqttCommands)
        mqttCA = try c.decodeIfPresent(String.self, forKey: .mqttCA)
        mqttCert = try c.decodeIfPresent(String.self, forKey: .mqttCert)
        mqttKey = try c.decodeIfPresent(String.self, forKey: .mqttKey)
        mqttClientID = try c.decodeIfPresent(String.self, forKey: .mqttClientID)
        profileInterval = try c.decodeIfPresent(Int.self, forKey: .profileInterval)
        if let profileInterval, !(1...86_400).contains(profileInterval) {
            throw DecodingError.dataCorruptedError(forKey: .profileInterval, in: c,
                                                   debugDescription: "\(profileInterval) is not 1 to 86400 seconds")
        }
        if let phases = importOnlyPhases, let bad = phases.first(where: { !["A", "B", "C"].contains($0) }) {
            throw DecodingError.dataCorruptedError(
                forKey: .importOnlyPhases, in: c, debugDescription: "'\(bad)' is not a phase (A, B or C)")
        }
        if let baud, !Self.supportedBauds.contains(baud) {
            throw DecodingError.dataCorruptedError(forKey: .baud, in: c, debugDescription:
                "\(baud) is not a KPM33B baud rate (one of \(Self.supportedBauds.map(String.init).joined(separator: ", ")))")
        }
        if let address = addresses?.first(where: { !(1...247).contains($0) }) {
            throw DecodingError.dataCorruptedError(
                forKey: .address, in: c, debugDescription: "\(address) is not a Modbus slave address (1-247)")
        }
        if let stateDir, !stateDir.hasPrefix("/") {
            throw DecodingError.dataCorruptedError(
                forKey: .stateDir, in: c, debugDescription: "'\(stateDir)' must be an absolute path")
        }
    }

    public static func load(path: String) throws(RunConfigFileError) -> RunConfigFile {
        let data: Data
        do { data = try readConfigFile(path) } catch { throw .unreadable(error) }
        return try decode(data, file: path)
    }

    public static func decode(_ data: Data, file: String) throws(RunConfigFileError) -> RunConfigFile {
        do { return try JSONDecoder().decode(RunConfigFile.self, from: data) } catch {
            throw .malformed(file: file, reason: describe(error))
        }
    }
}

public enum RunConfigFileError: Error, CustomStringConvertible, Equatable {
    case unreadable(FileReadError)
    case malformed(file: String, reason: String)

    public var description: String {
        switch self {
        case .unreadable(let error): error.description
        case .malformed(let file, let reason): "malformed config file \(file): \(reason)"
        }
    }
}

/// `HOST:PORT` for the HTTP listener; IPv6 hosts in brackets (`[::]:80`).
