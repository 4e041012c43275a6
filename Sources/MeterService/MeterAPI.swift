import Platform
import FoundationEssentials
import KPM33B

/// The MeterExtension #1 command set over a KPM33B `MeterLink`.
///
/// Wiring (CLI):
/// ```swift
/// let api = MeterAPI(link: poller, settings: store, system: systemd, network: LinuxNetworkInfo(),
///                    identity: DeviceIdentity(softwareVersion: "1.0.0", hardwareVersion: "rpi4"),
///                    operatingStatus: { statusEngine.currentCode })
/// var registry = api.registry()          // built-ins + `not_available` stubs
/// registry.register("wifi_status", sync: wifi.status)   // replace stubs later
/// let dispatcher = api.dispatcher(registry: registry)
/// ```
public final class MeterAPI: Sendable {
    /// The first meter: the default of every command that takes `"meter"`.
    public let link: any MeterLink
    /// Every meter on the bus, in address-list order; `links[0] === link` (issue 17).
    public let links: [any MeterLink]
    public let settings: any DeviceSettings
    public let system: any SystemControl
    public let network: any NetworkInfo
    public let identity: DeviceIdentity
    private let operatingStatus: (@Sendable () -> Int?)?
    private let updateStatus: (@Sendable () -> [String: String])?
    /// Issue 16: the MQTT uplink's state for `system_status`'s `mqtt` object (never the password).
    private let mqttStatus: (@Sendable () -> [String: String])?
    private let readings: MeterReadingCache
    /// One cache per further meter (`meter_reading` with several meters).
    private let moreReadings: [MeterReadingCache]
    private let operatingStatusOf: (@Sendable (Int) -> Int?)?
    private let clock: @Sendable () -> Int64
    private let started: Duration
    private let log: @Sendable (String) -> Void

    /// Commands of the description whose handlers live outside this type (WiFi, updates, files). They answer
    /// `not_available` until the composition root registers the real handlers over them, as `meterext run` does.
    public static let notAvailableCommands = [
        "wifi_config", "wifi_status", "wifi_scan", "firmware_update", "download_file", "request_post",
    ]

    /// - Parameters:
    ///   - operatingStatus: the status engine's AMI code for OBIS 0-0:96.5.0.255 (index 12 of `data`);
    ///     nil or returning nil leaves the entry out.
    ///   - updateStatus: firmware update progress for `system_status`'s `update` object; nil leaves it out.
    ///   - calendar: settlement days of the monthly history (default: the board's local time zone).
    ///   - now: Unix seconds (`sys-ts`).
    ///   - log: one line per event an operator should see; never receives the meter key.
    ///   - moreLinks: the other meters on the same bus after `link` (issue 17), each with its own entry in
    ///     `meter_reading`; `operatingStatusOfMeter` gives meter *i*'s AMI code (0 is `link`'s, default
    ///     `operatingStatus` for 0 and none for the others).
    public init(link: any MeterLink, moreLinks: [any MeterLink] = [], settings: any DeviceSettings, system: any SystemControl,
                network: any NetworkInfo, identity: DeviceIdentity,
                operatingStatus: (@Sendable () -> Int?)? = nil,
                operatingStatusOfMeter: (@Sendable (Int) -> Int?)? = nil,
                updateStatus: (@Sendable () -> [String: String])? = nil,
                mqttStatus: (@Sendable () -> [String: String])? = nil,
                calendar: any SettlementCalendar = LocalSettlementCalendar(),
                now: @escaping @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970) },
                log: @escaping @Sendable (String) -> Void = { _ in }) {
        self.link = link
        self.links = [link] + moreLinks
        self.operatingStatusOf = operatingStatusOfMeter
        self.moreReadings = moreLinks.map { _ in MeterReadingCache(builder: MeterReadingBuilder(calendar: calendar)) }
        self.settings = settings
        self.system = system
        self.network = network
        self.identity = identity
        self.operatingStatus = operatingStatus
        self.updateStatus = updateStatus
        self.mqttStatus = mqttStatus
        self.readings = MeterReadingCache(builder: MeterReadingBuilder(calendar: calendar))
        self.clock = now
        self.started = MonotonicClock.now()
        self.log = log
    }

    /// Built-in commands plus `not_available` stubs for the rest of the description's commands.
    public func registry() -> CommandRegistry {
        var r = CommandRegistry()
        r.register("meter_reading", sync: { [self] _ in meterReading() })
        r.register("meter_setkey", blocking: { [self] in setKey($0) })  // the store fsyncs
        r.register("system_status", sync: { [self] in
            switch meterLink(for: $0) {
            case .success(let link): return systemStatus(link)
            case .failure(let error): return error.result
            }
        })
        r.register("get_ip_info", sync: { [self] _ in ipInfo() })
        r.register("system_restart", sync: { [self] _ in
            .ok(OKReply(), afterReply: { [system] in system.rebootBoard() })
        })
        r.register("meter_factreset", sync: { [self] _ in
            .ok(OKReply(), afterReply: { [settings, log] in
                do { try settings.factoryReset() } catch { log("factory reset failed: \(error)") }
            })
        })
        r.register("relay_status", sync: { [self] in
            switch meterLink(for: $0) {
            case .success(let link): return relayStatus(link)
            case .failure(let error): return error.result
            }
        })
        r.register("relay_set", async: { [self] in await setRelay($0) })
        r.register("meter_info", sync: { [self] in
            switch meterLink(for: $0) {
            case .success(let link): return meterInfo(link)
            case .failure(let error): return error.result
            }
        })
        for cmd in Self.notAvailableCommands {
            r.register(cmd, sync: { req in
                .error(.notAvailable, "'\(req.cmd)' is not available on this firmware yet")
            })
        }
        return r
    }

    public func dispatcher(registry: CommandRegistry? = nil) -> CommandDispatcher {
        CommandDispatcher(registry: registry ?? self.registry(), health: { [self] in health() })
    }

    var uptimeSeconds: Int64 { (MonotonicClock.now() - started).components.seconds }

    // MARK: meter_reading

    public func meterReading() -> CommandResult {
        let first = readings.body(for: link.snapshot(), operatingStatus: operatingStatusOf?(0) ?? operatingStatus?())
        // One meter: the cached body as it always was, byte for byte.
        guard !moreReadings.isEmpty else { return CommandResult(body: first) }
        var parts = [first]
        for (i, cache) in moreReadings.enumerated() {
            parts.append(cache.body(for: links[i + 1].snapshot(), operatingStatus: operatingStatusOf?(i + 1)))
        }
        return CommandResult(body: Self.joinMeterBodies(parts))
    }

    /// Splices single-meter `meter_reading` bodies (`{"meter":[X],"result":"OK"}`) into one with `"meter":[X,Y,…]`
    /// in the given order; a body not in that shape (an encoding failure) is returned alone.
    static func joinMeterBodies(_ bodies: [[UInt8]]) -> [UInt8] {
        let head = Array(#"{"meter":["#.utf8), tail = Array(#"],"result":"OK"}"#.utf8)
        var out = head
        for (i, body) in bodies.enumerated() {
            guard body.count >= head.count + tail.count, body.starts(with: head), body.suffix(tail.count).elementsEqual(tail)
            else { return body }
            if i > 0 { out.append(UInt8(ascii: ",")) }
            out.append(contentsOf: body[head.count..<(body.count - tail.count)])
        }
        out.append(contentsOf: tail)
        return out
    }

    // MARK: "meter": which meter a command is about (issue 17)

    /// Why a `"meter"` parameter named no meter: answer `result` to the client.
    public struct MeterSelectionError: Error, Sendable {
        public var result: CommandResult
    }

    struct MeterParam: Decodable {
        var meter: RequestID?
    }

    /// The index in `links` of the meter a request's optional `"meter"` parameter names (its meter id, i.e. serial
    /// number, or its Modbus address, as a string or number); 0 (the first meter) when the parameter is absent.
    /// History, MQTT and status commands use this so every command names meters the same way.
    public func meterIndex(for request: CommandRequest) -> Result<Int, MeterSelectionError> {
        // Fast path: no "meter" key at all (the common single-meter request).
        guard Self.mentionsMeterKey(request.body) else { return .success(0) }
        switch request.parameters(MeterParam.self) {
        case .failure(let e):
            return .failure(MeterSelectionError(result: .error(.invalidParameter, e.message)))
        case .success(let p):
            guard let wanted = p.meter?.meterText else { return .success(0) }
            if let index = meterIndex(named: wanted) { return .success(index) }
            return .failure(MeterSelectionError(result: .error(.invalidParameter,
                "field 'meter' names no meter on this board: '\(wanted)' is neither a meter id nor the address of one (\(knownMeters()))")))
        }
    }

    /// The index of the meter whose id (serial number) or Modbus address is `name`, or nil.
    public func meterIndex(named name: String) -> Int? {
        if let i = links.firstIndex(where: { $0.snapshot().serialNumber == name }) { return i }
        if let address = UInt8(name), let i = links.firstIndex(where: { $0.meterAddress == address }) { return i }
        if links.count == 1, links[0].meterAddress == nil, name == "1" { return 0 }
        return nil
    }

    /// The link a request's optional `"meter"` parameter names (see `meterIndex(for:)`).
    public func meterLink(for request: CommandRequest) -> Result<any MeterLink, MeterSelectionError> {
        meterIndex(for: request).map { links[$0] }
    }

    func knownMeters() -> String {
        "meters: " + links.map { link in
            let id = link.snapshot().serialNumber ?? "?"
            return link.meterAddress.map { "\(id) at address \($0)" } ?? id
        }.joined(separator: ", ")
    }

    static func mentionsMeterKey(_ body: [UInt8]) -> Bool {
        let key = Array(#""meter""#.utf8)
        guard body.count >= key.count else { return false }
        for i in 0...(body.count - key.count) where body[i] == key[0] {
            if body[i..<(i + key.count)].elementsEqual(key) { return true }
        }
        return false
    }

    /// Issue 18 (perf): what `meterReading()`'s bytes depend on; the HTTP layer reuses a complete response while
    /// this is unchanged. Encodes nothing.
    public func meterReadingVersion() -> ReadingVersion {
        var version = ReadingVersion(generation: link.snapshot().generation,
                                     status: operatingStatusOf?(0) ?? operatingStatus?())
        // Several meters (issue 17): generations only grow, so their sum changes whenever any of them does.
        for i in links.indices.dropFirst() {
            version.generation &+= links[i].snapshot().generation
            version.otherStatuses.append(operatingStatusOf?(i))
        }
        return version
    }

    /// How many times the `meter_reading` reply was encoded (once per snapshot that a client asked for).
    public var meterReadingEncodeCount: Int { readings.encodeCount + moreReadings.reduce(0) { $0 + $1.encodeCount } }

    // MARK: meter_setkey

    struct SetKeyParams: Decodable { var key: String }

    /// 32 hex digits: an AES-128 key as DLMS/M-Bus meters use.
    public static func normalizedKey(_ key: String) -> String? {
        let hex = key.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x41...0x46).contains($0) || (0x61...0x66).contains($0) }
        guard key.utf8.count == 32, hex else { return nil }
        return key.lowercased()
    }

    func setKey(_ request: CommandRequest) -> CommandResult {
        // Never echo the key back: messages name the field, not its content.
        let key: String
        switch request.parameters(SetKeyParams.self) {
        case .success(let p): key = p.key
        case .failure(let e): return .error(.invalidKey, e.message)
        }
        guard let normalized = Self.normalizedKey(key) else {
            return .error(.invalidKey, "field 'key' must be 32 hexadecimal characters (an AES-128 key), got \(key.utf8.count) characters")
        }
        do {
            try settings.setMeterKey(normalized)
        } catch {
            log("meter key could not be stored")
            return .error(.storageFailed, "the key could not be stored")
        }
        log("meter key updated")
        return .ok(OKReply())
    }

    // MARK: system_status

    struct SystemStatus: Encodable {
        var model: String
        var swVersion: String
        var hwVersion: String
        var mac: String
        var sysTS: String
        var uptime: String
        var meterLink: String
        var meterid: String
        var line: String
        var pollCycleMS: String
        var lastReadingTS: String
        var lastError: String
        var lastErrorTS: String
        var linkErrors: [String: String]
        /// Progress of a firmware update (state, bytes, percent, …), when the board can update.
        var update: [String: String]?
        /// Issue 16: the MQTT uplink (state, broker without password, in flight, backlog), when configured.
        var mqtt: [String: String]?
        var result = "OK"

        enum CodingKeys: String, CodingKey {
            case model, swVersion = "sw-version", hwVersion = "hw-version", mac, sysTS = "sys-ts", uptime
            case meterLink = "meter_link", meterid, line, pollCycleMS = "poll_cycle_ms"
            case lastReadingTS = "last_reading_ts", lastError = "last_error", lastErrorTS = "last_error_ts"
            case linkErrors = "link_errors", update, mqtt, result
        }
    }

    public func systemStatus() -> CommandResult { systemStatus(link) }

    public func systemStatus(_ link: any MeterLink) -> CommandResult {
        let s = link.snapshot()
        let c = s.counters
        let counters: [String: String] = [
            "transactions": String(c.transactions), "succeeded": String(c.succeeded), "timeouts": String(c.timeouts),
            "crc": String(c.crcErrors), "exceptions": String(c.exceptions), "wrong_slave": String(c.wrongSlave),
            "wrong_function": String(c.wrongFunction), "malformed": String(c.malformed), "io": String(c.ioErrors),
            "retries": String(c.retries), "implausible": String(s.implausibleValues),
        ]
        return .ok(SystemStatus(
            model: identity.model, swVersion: identity.softwareVersion, hwVersion: identity.hardwareVersion,
            mac: network.macAddress() ?? "", sysTS: String(clock()), uptime: String(uptimeSeconds),
            meterLink: s.health.rawValue, meterid: s.serialNumber ?? "", line: link.lineDescription,
            pollCycleMS: String(s.cycleMicroseconds / 1000),
            lastReadingTS: s.readTime(.basic).map(String.init) ?? "",
            lastError: s.lastError?.message ?? "", lastErrorTS: s.lastError.map { String($0.at) } ?? "",
            linkErrors: counters, update: updateStatus?(), mqtt: mqttStatus?()))
    }

    // MARK: get_ip_info

    struct IPReply: Encodable {
        var ip: String, gw: String, netMask: String, interface: String
        var result = "OK"
        enum CodingKeys: String, CodingKey { case ip = "IP", gw = "GW", netMask = "Net Mask", interface, result }
    }

    public func ipInfo() -> CommandResult {
        guard let info = network.ipInfo() else { return .error(.noNetwork, "no network interface has an IPv4 address") }
        return .ok(IPReply(ip: info.address, gw: info.gateway, netMask: info.netmask, interface: info.interface))
    }

    // MARK: relay

    struct RelayReply: Encodable {
        var state: String
        /// Per-phase status, when the meter reports it consistently (0x07/0x00); otherwise absent and `phases_note` says so.
        var phases: [String: String]?
        var phases_note: String?
        var ts: String
        var result = "OK"
    }

    /// Relay 1 switches the load (see `RelayState`); the per-phase bits are reported alongside.
    static func stateWord(_ relay: RelayState) -> String { relay.closed ? "on" : "off" }

    static func relayReply(_ relay: RelayState, ts: Int64) -> RelayReply {
        let word = { (b: Bool) in b ? "on" : "off" }
        return RelayReply(state: stateWord(relay),
                          phases: relay.phases.map { ["A": word($0.a), "B": word($0.b), "C": word($0.c)] },
                          phases_note: relay.phasesReported ? nil : RelayState.phasesNotReported,
                          ts: String(ts))
    }

    public func relayStatus() -> CommandResult { relayStatus(link) }

    public func relayStatus(_ link: any MeterLink) -> CommandResult {
        let s = link.snapshot()
        if s.health == .offline {
            return .error(.meterOffline, "the meter is not answering: \(s.lastError?.message ?? "no answer")")
        }
        guard let relay = s.relay else { return .error(.noData, "the relay state has not been read yet") }
        return .ok(Self.relayReply(relay, ts: s.readTime(.relay) ?? s.publishedAt))
    }

    struct RelaySetParams: Decodable { var state: String }

    func setRelay(_ request: CommandRequest) async -> CommandResult {
        let link: any MeterLink
        switch meterLink(for: request) {
        case .success(let l): link = l
        case .failure(let error): return error.result
        }
        let wanted: Bool
        switch request.parameters(RelaySetParams.self) {
        case .success(let p) where p.state == "on": wanted = true
        case .success(let p) where p.state == "off": wanted = false
        case .success: return .error(.invalidParameter, "field 'state' must be \"on\" or \"off\"")
        case .failure(let e): return .error(.invalidParameter, e.message)
        }
        do {
            let readBack = try await link.setRelay(closed: wanted)
            log("relay set \(wanted ? "on" : "off"), meter reports \(Self.stateWord(readBack))")
            guard readBack.closed == wanted else {
                return .error(.relayMismatch,
                              "the meter reports the relay \(Self.stateWord(readBack)) after the command (is it in local control mode?)")
            }
            return .ok(Self.relayReply(readBack, ts: clock()))
        } catch {
            return .error(.relayFailed, "the relay command failed: \(error)")
        }
    }

    // MARK: meter_info

    struct MeterInfo: Encodable {
        var meterid: String
        var clock: String
        var controlMode: String
        var loadThresholdKW: String
        var modbusAddress: String
        var line: String
        var meterLink: String
        var ts: String
        var result = "OK"
        enum CodingKeys: String, CodingKey {
            case meterid, clock, controlMode = "control_mode", loadThresholdKW = "load_threshold_kw"
            case modbusAddress = "modbus_address", line, meterLink = "meter_link", ts, result
        }
    }

    public func meterInfo() -> CommandResult { meterInfo(link) }

    public func meterInfo(_ link: any MeterLink) -> CommandResult {
        let s = link.snapshot()
        guard let p = s.parameters else { return .error(.noData, "the meter's parameters have not been read yet") }
        return .ok(MeterInfo(
            meterid: p.serialNumber, clock: p.clock.text, controlMode: p.controlMode.rawValue,
            loadThresholdKW: String(p.loadThresholdKW), modbusAddress: String(p.modbusAddress),
            line: link.lineDescription, meterLink: s.health.rawValue,
            ts: String(s.readTime(.parameters) ?? s.publishedAt)))
    }

    // MARK: /healthz

    struct Health: Encodable {
        var result = "OK"
        var meterLink: String
        var uptime: String
        enum CodingKeys: String, CodingKey { case result, meterLink = "meter_link", uptime }
    }

    /// The service is up (HTTP 200) even when the meter is offline: the installer checks the meter via `meter_link`.
    public func health() -> CommandResult {
        .ok(Health(meterLink: link.snapshot().health.rawValue, uptime: String(uptimeSeconds)))
    }
}

extension RequestID {
    /// A `"meter"` value as text: a string as sent, an integer in decimal.
    fileprivate var meterText: String {
        switch self {
        case .string(let s): return s
        case .integer(let i): return String(i)
        case .unsigned(let u): return String(u)
        case .double(let d): return d == d.rounded() && abs(d) < 1e15 ? String(Int64(d)) : String(d)
        }
    }
}
