import Platform
import ArgumentParser
import BoardSupport
import Fleet
import FirmwareUpdate
import Dispatch
import Glibc
import KPM33B
import MeterStatus
import ModbusTCP
import ModbusCore
import Synchronization

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the gateway: poll the meter and serve the MeterExtension API.",
        discussion: """
            Polls the KPM33B (basic values and relay every cycle, energy every 5 s, parameters and history at \
            start and hourly) and serves POST /api on --listen, the set-up page on /.
            Settings come from, in order of precedence: flags, the config file (--config), the board profile \
            (--board or the config's "board"), and the meter's factory settings (9600 8E1, address 1).
            With --simulate the built-in KPM33B simulator runs in-process on a pty pair, so the real serial and \
            Modbus code is exercised without a meter (this is what `make run` does).
            Under systemd it sends READY=1 once the API listens and WATCHDOG=1 only while both the poll loop and \
            the HTTP server are alive.
            """)

    @OptionGroup var serial: SerialOptions

    @Option(help: ArgumentHelp("Address and port of the API (board default 0.0.0.0:80).", valueName: "host:port"),
            transform: OptionValue.address)
    var listen: ListenAddress?

    @OptionGroup var state: StateDirectoryOptions

    @Option(help: ArgumentHelp("WiFi back end: networkmanager (nmcli), sim (a simulated single radio like a Pi's) or sim-concurrent (a simulated radio running access point and client at once).", valueName: "networkmanager|sim|sim-concurrent"))
    var wifi: RunConfigFile.WiFiBackend?

    @Option(name: .customLong("runtime-dir"), help: ArgumentHelp("Runtime directory, emptied at every boot and kept across service restarts (default $RUNTIME_DIRECTORY, else /run/meterext as root, else $XDG_RUNTIME_DIR/meterext): tells a new boot from a restart.", valueName: "dir"))
    var runtimeDir: String?

    @Option(help: ArgumentHelp("Config file (JSON, keys as the flags; /etc/meterext/meterext.json on boards).", valueName: "file"))
    var config: String?

    @Option(help: ArgumentHelp("Board profile (wiring): see /usr/share/meterext/boards or board/profiles.", valueName: "name"))
    var board: String?

    @Option(name: .customLong("log-level"), help: ArgumentHelp("error, warning, info or debug (default info).", valueName: "level"))
    var logLevel: String?

    @Flag(help: "Run against the built-in KPM33B simulator on a pty pair instead of a meter.")
    var simulate = false

    @Option(name: .customLong("poll-interval"), help: "Seconds between poll cycles (default 1).")
    var pollInterval: Double?

    @Option(name: .customLong("keys-dir"), help: ArgumentHelp("Public keys that firmware images must be signed with (default /etc/meterext/keys).", valueName: "dir"))
    var keysDir: String?

    @Option(name: .customLong("host-name"), help: ArgumentHelp("A name the board is reached under besides its hostname and hostname.local (repeatable): requests that change the board may use it as Host.", valueName: "name"))
    var hostNames: [String] = []

    @Flag(name: .customLong("open-api"), help: "Accept every command without the API token from anywhere (strict MeterExtension #1 compatibility).")
    var openAPI = false

    @Option(name: .customLong("downloads-quota"), help: ArgumentHelp("Most bytes download_file may keep in <state-dir>/downloads (default 256 MiB).", valueName: "bytes"))
    var downloadsQuota: Int64?

    // Issue 15: the load profile.
    @Option(name: .customLong("profile-interval"), help: ArgumentHelp("Load-profile interval in seconds; intervals end on multiples of it (default 900, config key profile_interval).", valueName: "s"))
    var profileInterval: Int?
    // Issue 17: Modbus TCP server.
    @Option(name: .customLong("modbus-tcp"), help: ArgumentHelp("Serve Modbus TCP on this address (off by default; 0.0.0.0:502 on boards): unit id = meter address; measurement and energy registers come from the latest reading, other requests go to the bus between polls.", valueName: "host:port"),
            transform: OptionValue.address)
    var modbusTCP: ListenAddress?

    @Option(name: .customLong("modbus-tcp-allow"), help: ArgumentHelp("Addresses or prefixes allowed to write over Modbus TCP (FC05/FC16), comma-separated or repeated, e.g. 192.168.1.20,10.0.0.0/8; everyone else gets exception 01 for writes.", valueName: "list"))
    var modbusTCPAllow: [String] = []

    @Option(name: .customLong("modbus-tcp-idle-timeout"), help: ArgumentHelp("Seconds a Modbus TCP connection may stay without a request before it is closed (default 60).", valueName: "seconds"))
    var modbusTCPIdleTimeout: Double?

    @Option(name: .customLong("http-threads"), help: ArgumentHelp("Event loop threads of the API server (default: one per core the service may run on, as narrowed by taskset or the unit's CPUAffinity=; fewer leaves cores to the poll thread and other services on a shared board).", valueName: "n"))
    var httpThreads: Int?

    @Flag(name: .customLong("allow-unsigned-images"), help: "Accept unsigned firmware images (development boards only; logged loudly).")
    var allowUnsignedImages = false

    // MARK: issue 16 (fleet): MQTT uplink
    @Option(help: ArgumentHelp("MQTT broker for the fleet uplink: mqtt[s]://[user[:password]@]host[:port] (off by default; the password is never logged or shown).", valueName: "url"))
    var mqtt: String?

    @Option(name: .customLong("mqtt-prefix"), help: ArgumentHelp("Topic prefix (default meterext): <prefix>/<meterid>/reading|interval|status|availability. No + or #.", valueName: "prefix"))
    var mqttPrefix: String?

    @Option(name: .customLong("mqtt-live-interval"), help: ArgumentHelp("Seconds between live readings on <prefix>/<meterid>/reading (QoS 0, default 10).", valueName: "s"))
    var mqttLiveInterval: Double?

    @Flag(name: .customLong("mqtt-commands"), help: "Accept relay commands from the broker (<prefix>/<meterid>/relay/set) and announce the relay as a Home Assistant switch.")
    var mqttCommands = false

    @Option(name: .customLong("mqtt-ca"), help: ArgumentHelp("CA file for mqtts:// (default: the system's CAs).", valueName: "file"))
    var mqttCA: String?

    @Option(name: .customLong("mqtt-cert"), help: ArgumentHelp("Client certificate for mqtts:// (with --mqtt-key).", valueName: "file"))
    var mqttCert: String?

    @Option(name: .customLong("mqtt-key"), help: ArgumentHelp("Client certificate's private key for mqtts://.", valueName: "file"))
    var mqttKey: String?

    @Option(name: .customLong("mqtt-client-id"), help: ArgumentHelp("MQTT client id, unique per board on one broker (default meterext-<hostname>).", valueName: "id"))
    var mqttClientID: String?

    /// The uplink's settings from flags over the config file; nil when no broker is configured.
    func resolveUplink(_ file: RunConfigFile?) throws -> UplinkSettings? {
        guard let url = mqtt ?? file?.mqtt else { return nil }
        var settings = UplinkSettings(broker: try BrokerURL(parsing: url))
        settings.prefix = mqttPrefix ?? file?.mqttPrefix ?? "meterext"
        try UplinkSettings.validatePrefix(settings.prefix)
        settings.liveInterval = mqttLiveInterval ?? file?.mqttLiveInterval ?? 10
        guard settings.liveInterval >= 1 else { throw ValidationError("--mqtt-live-interval must be at least 1 s") }
        settings.commands = mqttCommands || (file?.mqttCommands ?? false)
        settings.caFile = mqttCA ?? file?.mqttCA
        settings.certFile = mqttCert ?? file?.mqttCert
        settings.keyFile = mqttKey ?? file?.mqttKey
        if (settings.certFile == nil) != (settings.keyFile == nil) {
            throw ValidationError("--mqtt-cert and --mqtt-key go together")
        }
        if !settings.broker.tls && (settings.caFile != nil || settings.certFile != nil) {
            throw ValidationError("--mqtt-ca/--mqtt-cert/--mqtt-key need an mqtts:// broker")
        }
        var host = [CChar](repeating: 0, count: 256)
        let hostname = gethostname(&host, host.count) == 0 ? String(cString: host) : "board"
        settings.clientID = mqttClientID ?? file?.mqttClientID ?? "meterext-\(hostname)"
        guard !settings.clientID.isEmpty, settings.clientID.utf8.count <= 128 else {
            throw ValidationError("--mqtt-client-id must be 1-128 bytes")
        }
        return settings
    }

    func run() async throws {
        let settings: Gateway.Settings
        do {
            settings = try resolveSettings()
        } catch {
            printError("meterext: \(error)")
            throw ExitStatus.usage.exit
        }
        let log = Logger(level: settings.logLevel)
        // An installed firmware update runs instead of this binary (execv, same PID); a version on trial that
        // keeps failing is switched back before it gets here again.
        _ = UpdateLauncher.launch(stateDirectory: settings.stateDir, log: { log.info($0) })
        let gateway: Gateway
        do {
            gateway = try Gateway(settings, log: log)
            try await gateway.start()
        } catch {
            log.error("cannot start: \(error)")
            throw ExitStatus.failed.exit
        }
        await waitForTermination()
        await gateway.stop()
    }

    func resolveSettings() throws -> Gateway.Settings {
        let file = try config.map { try RunConfigFile.load(path: $0) }
        let boardName = board ?? file?.board
        var searchPath = BoardProfileLoader.installedSearchPath
        // Running from a checkout (.build/debug/meterext): the repo's profiles too.
        if let exe = CommandLine.arguments.first,
           let cut = exe.indices.first(where: { exe[$0...].hasPrefix("/.build/") }) {
            searchPath.append(String(exe[..<cut]) + "/board/profiles")
        }
        let profile = try boardName.map { try BoardProfileLoader(searchPath: searchPath).load($0) }
        let level = try LogLevel(parsing: logLevel ?? file?.logLevel?.description ?? "info")
        let base = LinkSettings(
            serial: file?.serial ?? profile?.serial ?? LinkSettings.defaultSerial,
            line: LineSettings(baud: file?.baud ?? 9600,
                               parity: file?.parity ?? .even),
            address: UInt8(file?.address ?? 1),
            direction: file?.direction ?? profile?.direction ?? .none,
            responseTimeoutMs: 600, retries: 3,
            moreAddresses: (file?.addresses ?? []).dropFirst().map { UInt8($0) })
        var plan = PollPlan()
        if let pollInterval {
            guard pollInterval >= 0.05 else { throw ValidationError("--poll-interval must be at least 0.05 s") }
            plan.cycleSeconds = pollInterval
        }
        var settings = Gateway.Settings(
            link: serial.merged(over: base),
            listen: listen ?? file?.listen ?? ListenAddress(host: "0.0.0.0", port: 80),
            stateDir: state.stateDir ?? file?.stateDir ?? StateDirectoryOptions.defaultPath,
            wifi: wifi ?? file?.wifi ?? .networkmanager,
            simulate: simulate, plan: plan, board: profile, logLevel: level)
        if let keysDir { settings.keysDirectory = keysDir }
        if let runtimeDir { settings.runtimeDir = runtimeDir }
        settings.allowUnsignedImages = allowUnsignedImages
        if let downloadsQuota {
            guard downloadsQuota > 0 else { throw ValidationError("--downloads-quota must be positive") }
            settings.downloadsQuotaBytes = downloadsQuota
        }
        settings.openAPI = openAPI
        settings.hostNames = hostNames + (file?.hostNames ?? [])
        settings.importOnlyPhases = Set((file?.importOnlyPhases ?? []).compactMap(Phase.init(rawValue:)))
        settings.prepaid = file?.prepaid ?? false
        settings.mqtt = try resolveUplink(file)  // issue 16
        // Issue 15: the load profile.
        if let interval = profileInterval ?? file?.profileInterval {
            guard (1...86_400).contains(interval) else { throw ValidationError("--profile-interval must be 1 to 86400 seconds") }
            settings.profileInterval = Int64(interval)
        }
        // Issue 17: Modbus TCP.
        settings.modbusTCP = modbusTCP ?? file?.modbusTCP
        let allow = (modbusTCPAllow.isEmpty ? (file?.modbusTCPAllow ?? []) : modbusTCPAllow)
            .flatMap { $0.split(separator: ",").map(String.init) }
        if let modbusTCPIdleTimeout {
            guard modbusTCPIdleTimeout >= 0.1 else { throw ValidationError("--modbus-tcp-idle-timeout must be at least 0.1 s") }
            settings.modbusTCPIdleSeconds = modbusTCPIdleTimeout
        }
        do { settings.modbusTCPAllow = try ModbusTCPAllowList(allow) } catch { throw ValidationError("--modbus-tcp-allow: \(error)") }
        if let httpThreads {
            guard (1...64).contains(httpThreads) else { throw ValidationError("--http-threads must be 1 to 64") }
            settings.httpThreads = httpThreads
        }
        return settings
    }

    /// Returns on SIGTERM or SIGINT.
    private func waitForTermination() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let queue = DispatchQueue(label: "meterext.signals")
            var sources: [DispatchSourceSignal] = []
            let once = OnceFlag()
            for sig in [SIGTERM, SIGINT] {
                signal(sig, SIG_IGN)
                let source = DispatchSource.makeSignalSource(signal: sig, queue: queue)
                source.setEventHandler {
                    if once.claim() { continuation.resume() }
                }
                source.resume()
                sources.append(source)
            }
            // Keep the sources alive for the life of the process.
            SignalSources.keep(sources)
        }
    }
}

extension RunConfigFile.WiFiBackend: ExpressibleByArgument {}

final class OnceFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    func claim() -> Bool { !flag.exchange(true, ordering: .acquiringAndReleasing) }
}

enum SignalSources {
    nonisolated(unsafe) static var kept: [DispatchSourceSignal] = []
    static func keep(_ sources: [DispatchSourceSignal]) { kept = sources }
}
