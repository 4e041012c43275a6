import LinuxSystem
import Platform
import BoardSupport
import DeviceState
import Dispatch
import FirmwareUpdate
import Fleet
import FoundationEssentials
import GatewayMetrics
import History
import Glibc
import History
import KPM33B
import MeterHTTP
import MeterHardware
import MeterService
import MeterStatus
import ModbusCore
import ModbusTCP
import NIOCore
import Synchronization

/// Everything `meterext run` starts, in dependency order, and stops in reverse.
final class Gateway: @unchecked Sendable {
    struct Settings {
        var link: LinkSettings
        var listen: ListenAddress
        var stateDir: String
        var wifi: RunConfigFile.WiFiBackend
        /// `--runtime-dir`: the boot marker and what survives a service restart (emptied at every boot).
        var runtimeDir: String = WiFiRuntime.directoryFromEnvironment()
        var simulate: Bool
        var plan: PollPlan
        var board: BoardProfile?
        var logLevel: LogLevel
        var keysDirectory = "/etc/meterext/keys"
        /// `--open-api`: no token for any command (strict MeterExtension #1 compatibility).
        var openAPI = false
        var allowUnsignedImages = false
        /// `--host-name` / `host_names`: names allowed in `Host` for requests that change the board.
        var hostNames: [String] = []
        var downloadsQuotaBytes: Int64 = 256 << 20
        /// `import_only_phases`: export on these phases is a reversed phase (1013).
        var importOnlyPhases: Set<Phase> = []
        /// `prepaid`: enables 1001 No Credit.
        var prepaid = false
        /// Issue 16: `--mqtt…` / `mqtt…` keys; nil: no uplink.
        var mqtt: UplinkSettings? = nil
        /// `--profile-interval` / `profile_interval` (issue 15).
        var profileInterval: Int64 = 900
        /// Issue 17: `--modbus-tcp` (off when nil) and the peers that may write through it.
        var modbusTCP: ListenAddress? = nil
        var modbusTCPAllow = try! ModbusTCPAllowList([])
        var modbusTCPIdleSeconds = 60.0
        /// `--http-threads`: event loops of the API server (nil: one per core it may run on, `UsableCPUs`).
        var httpThreads: Int? = nil
    }

    let settings: Settings
    let log: Logger
    let store: StateStore
    /// Held for the life of the process: tells the CLI that the service runs and where its API answers.
    let lock: ServiceLock
    let wifi: WiFiManager
    let wifiQueue = DispatchQueue(label: "meterext.wifi")
    let simulator: InProcessSimulator?
    let connection: MeterConnection
    /// The first meter's status monitor.
    let monitor: StatusMonitor
    /// Issue 17: one status monitor per meter, in address-list order.
    let monitors: [StatusMonitor]
    let updates: UpdateAPI
    let restart: ProcessRestart
    let server: APIServer
    /// Issue 17: the Modbus TCP server, when `--modbus-tcp` is given.
    let modbusTCP: ModbusTCPServer?
    let notifier = SystemdNotifier()
    /// Issue 15: the load profile (nil when its store could not be opened at all).
    let history: HistoryRecorder?
    let gate: WatchdogGate
    /// Issue 16: the MQTT uplink (nil without `--mqtt`) and `/metrics`.
    let uplink: MQTTUplink?
    let metrics: GatewayMetrics
    private var tasks: [Task<Void, Never>] = []
    private var housekeeping: PeriodicThread?
    private var button: SetupButtonWatcher?

    init(_ settings: Settings, log: Logger) throws {
        self.settings = settings
        self.log = log
        try AtomicFile.makeDirectory(settings.stateDir)
        lock = try ServiceLock.acquire(directory: settings.stateDir)
        store = try StateStore(directory: settings.stateDir)
        for warning in store.loadWarnings { log.warning(warning) }

        let runtime = WiFiRuntime(directory: settings.runtimeDir)
        let backend: any WiFiBackend
        switch settings.wifi {
        case .sim, .simConcurrent:
            try? AtomicFile.makeDirectory(settings.runtimeDir)
            backend = SimulatedWiFiBackend(concurrent: settings.wifi == .simConcurrent,
                                           persistPath: settings.runtimeDir + "/sim-radio.json")
        case .networkmanager:
            let (configuration, note) = NetworkManagerBackend.detectedConfiguration()
            log.info(note)
            backend = NetworkManagerBackend(configuration: configuration)
        }
        wifi = WiFiManager(backend: backend, store: store, runtime: runtime, log: { log.info($0) })

        var link = settings.link
        if settings.simulate {
            let sim = try InProcessSimulator(units: link.addresses)
            try sim.start()
            simulator = sim
            link.serial = sim.path
            // A pty cannot do parity; the simulator's side runs 8N1 too.
            link.line.parity = .none
        } else {
            simulator = nil
        }
        connection = try MeterConnection(link, plan: settings.plan)
        // Issue 12: one line per quantity when it turns implausible; the logger folds repeats of a flapping one.
        let several = connection.pollers.count > 1
        for poller in connection.pollers {
            let prefix = several ? "meter \(poller.unit) value: " : "meter value: "
            let keyPrefix = several ? "implausible.\(poller.unit)." : "implausible."
            poller.onImplausibleValue = { register, value in
                log.failure(key: keyPrefix + "\(register.address)", level: .warning,
                            prefix + Plausibility.message(register, value: value))
            }
        }
        // Issue 18 (perf): SCHED_FIFO and locked memory for the poll thread when the unit grants them; one line if not.
        connection.bus.onRealtimeOutcome = { outcome in
            if let message = outcome.message { log.warning(message) }
        }
        var statusConfig = StatusEngineConfig()
        statusConfig.importOnlyPhases = settings.importOnlyPhases
        monitors = connection.pollers.map {
            StatusMonitor(link: $0, config: statusConfig, prepaidMode: settings.prepaid)
        }
        monitor = monitors[0]

        let restart = ProcessRestart(log: log)
        self.restart = restart
        var updateConfig = UpdateConfiguration(
            stateDirectory: settings.stateDir, keysDirectory: settings.keysDirectory,
            allowUnsigned: settings.allowUnsignedImages, log: { log.info($0) },
            // The reply has gone out by the time the new version is started.
            onInstalled: { _ in restart.restartService() })
        updateConfig.packagedVersion = BuildInfo.version
        updateConfig.downloadsQuotaBytes = settings.downloadsQuotaBytes
        if settings.allowUnsignedImages {
            log.warning("unsigned firmware images are ALLOWED (development board): never use this in the field")
        }
        updates = UpdateAPI(updater: FirmwareUpdater(configuration: updateConfig),
                            network: NetworkCommands(configuration: updateConfig))
        updates.network.removeLeftoverPartialFiles()

        // ── Issue 16 (fleet): MQTT uplink and /metrics ─────────────────────────────────────────────────────────
        // Contract C: every meter on the bus, by its address.
        let uplinkMeters = connection.pollers.map { UplinkMeter(address: $0.unit, link: $0) }
        let monitorByAddress = Dictionary(uniqueKeysWithValues: zip(connection.pollers.map(\.unit), monitors))
        let intervalSource = GatewayIntervalSource()  // the history store is handed over below, once it is open
        if let mqtt = settings.mqtt {
            var options = MQTTUplink.Options(settings: mqtt)
            options.softwareVersion = BuildInfo.version
            uplink = MQTTUplink(options: options, meters: uplinkMeters, source: intervalSource,
                                stateDirectory: settings.stateDir,
                                amiCode: { monitorByAddress[$0]?.amiCode() },
                                log: { error, message in error ? log.warning(message) : log.info(message) })
        } else {
            uplink = nil
        }
        let uplinkForMetrics = uplink
        metrics = GatewayMetrics(
            meters: uplinkMeters.map { GatewayMetrics.Meter(address: $0.address, link: $0.link) },
            uplink: uplinkForMetrics.map { u in {
                let s = u.status()
                return GatewayMetrics.UplinkFigures(connected: s.state == .connected || s.state == .noAcks, inFlight: s.inFlight,
                                                    backlog: s.backlog, published: s.published,
                                                    acknowledged: s.acknowledged, connects: s.connects)
            } })
        // ── end issue 16 ──────────────────────────────────────────────────────────────────────────────────────

        let store = self.store, wifi = self.wifi, wifiQueue = self.wifiQueue, updates = self.updates
        let monitors = self.monitors
        let api = MeterAPI(
            link: connection.poller,
            moreLinks: Array(connection.pollers.dropFirst()),
            settings: StoreDeviceSettings(store: store, wifi: wifi, queue: wifiQueue, log: { log.info($0) }),
            system: restart,
            network: LinuxNetworkInfo(),
            identity: DeviceIdentity(softwareVersion: BuildInfo.version,
                                     hardwareVersion: settings.board?.name ?? (settings.simulate ? "simulator" : "generic")),
            operatingStatus: { [monitor] in monitor.amiCode() },
            operatingStatusOfMeter: { monitors[$0].amiCode() },
            updateStatus: { updates.statusFields() },
            mqttStatus: uplinkForMetrics.map { u in { u.status().fields } },  // issue 16
            log: { log.info($0) })
        var registry = api.registry()
        WiFiCommands(manager: wifi, queue: wifiQueue).register(into: &registry)
        StatusCommands(monitors: monitors, api: api).register(into: &registry)
        updates.register(into: &registry)
        // --- issue 15: load profile, meter_history and /history.csv ---
        let historyPath = settings.stateDir + "/history.sqlite"
        var historyStore: HistoryStore? = nil
        var historyFailure = ""
        do {
            let store = try HistoryStore(path: historyPath)
            for note in store.openNotes { log.error(note) }
            historyStore = store
        } catch {
            historyFailure = "\(error)"
            log.error("history: cannot open \(historyPath) (\(error)): the load profile is not recorded")
        }
        let historyMeters = connection.pollers.map { HistoryRecorder.Meter(address: $0.unit, link: $0) }
        history = historyStore.map { store in
            HistoryRecorder(store: store, meters: historyMeters, interval: settings.profileInterval,
                            period: settings.plan.cycleSeconds, trust: TimeTrust(buildDate: BuildInfo.buildDate),
                            log: { level, line in
                                switch level {
                                case .info: log.info(line)
                                case .warning: log.warning(line)
                                case .error: log.failure(key: "history", line)
                                }
                            })
        }
        let historyCommands = HistoryCommands(store: historyStore, unavailableReason: historyFailure,
                                              meters: historyMeters.map { ($0.address, $0.link) })
        historyCommands.register(into: &registry)
        // --- end issue 15 ---
        intervalSource.setStore(historyStore)  // issue 16: the uplink sends the load profile from this store
        TokenAPI(store: store, restart: restart, log: log).register(into: &registry)
        var http = APIServer.Configuration(host: settings.listen.host, port: settings.listen.port)
        http.eventLoops = settings.httpThreads
        http.protectedCommands.formUnion(TokenAPI.protectedCommands)
        // Commands that change the board: free from the board itself; the set-up commands also from a phone that
        // reached the board on the open access point's own address; otherwise only with the API token (unless the
        // installer turned that off).
        http.tokenRequired = store.config.tokenRequired && !settings.openAPI
        http.tokenIsValid = { [store] token in store.config.apiToken.constantTimeEquals(token) }
        http.browser = BrowserPolicy(extraNames: settings.hostNames)
        let accessPointAddress = wifi.backend.accessPointAddress
        http.arrivedOnOpenSetupAccessPoint = { [wifi] local in
            wifi.accessPointIsOpen && PeerAddress.isIPv4(local, equalTo: accessPointAddress)
        }
        let updater = updates.updater
        http.upload = UploadRoute(pageHTML: OTAPage.html) { bytes in
            let result = await updater.installUploadedImage(bytes)
            switch result {
            case .success: return (200, OTAPage.replyText(for: result))
            case .failure(let error):
                return (["busy", "downgrade"].contains(error.code) ? 409 : 400, OTAPage.replyText(for: result))
            }
        }
        // Issue 18 (perf): complete meter_reading responses are reused while the reading is unchanged.
        http.meterReadingVersion = { [api] in api.meterReadingVersion() }
        let gatewayMetrics = metrics  // issue 16: GET /metrics and replies by status
        http.metrics = MetricsRoute(contentType: GatewayMetrics.contentType, render: { gatewayMetrics.render() },
                                    countResponse: { gatewayMetrics.countHTTP(status: $0) })
        // Issue 15: the load profile as CSV, produced off the event loop.
        http.getRoutes["/history.csv"] = GetRoute { query in
            await withCheckedContinuation { continuation in
                HistoryCommands.queue.async { continuation.resume(returning: historyCommands.csv(query: query)) }
            }
        }
        if !http.tokenRequired {
            log.warning("the API token is not required: anyone on the network can change this board")
        }
        server = APIServer(configuration: http, dispatcher: api.dispatcher(registry: registry),
                           setupPageHTML: SetupPage.html)
        // Issue 17: Modbus TCP server over the bus.
        if let address = settings.modbusTCP {
            var tcp = ModbusTCPServer.Configuration(host: address.host, port: address.port, allow: settings.modbusTCPAllow)
            tcp.maxSnapshotAgeSeconds = Int64(max(5, settings.plan.offlineAfterSeconds))
            tcp.idleTimeout = .nanoseconds(Int64(settings.modbusTCPIdleSeconds * 1e9))
            modbusTCP = ModbusTCPServer(configuration: tcp, bus: connection.bus,
                                        wallClock: { Int64(Date().timeIntervalSince1970) })
        } else {
            modbusTCP = nil
        }
        gate = WatchdogGate(subsystems: [.pollLoop, .http], staleAfter: .seconds(max(10, Int64(settings.plan.cycleSeconds * 5))))
    }

    /// Starts polling and serving; returns once the API listens (READY=1 has been sent).
    func start() async throws {
        try connection.bus.start()
        try history?.start()  // issue 15
        log.info("polling \(connection.settings.serial) (\(connection.settings.line), "
            + (connection.pollers.count > 1 ? "addresses \(connection.settings.addresses.map(String.init).joined(separator: ","))"
                                            : "address \(connection.settings.address)") + ")"
            + (settings.simulate ? " [built-in KPM33B simulator]" : ""))
        wifiQueue.async { [wifi] in wifi.start(now: MonotonicClock.nowSeconds()) }
        if let modbusTCP, let address = settings.modbusTCP {
            let bound = try await modbusTCP.start()
            log.info("Modbus TCP listening on \(address) (bound \(bound)); writes allowed from "
                + (settings.modbusTCPAllow.isEmpty ? "nobody" : "the --modbus-tcp-allow list"))
        }
        let bound = try await server.start()
        log.info("API listening on http://\(settings.listen) (bound \(bound))")
        do { try lock.publish(TokenAPI.lockInfo(bound: bound)) } catch { log.warning("cannot write \(lock.path): \(error)") }
        do { try notifier.ready(status: "serving on \(settings.listen)") } catch { log.warning("\(error)") }
        startBackgroundTasks()
        if let uplink {  // issue 16
            try uplink.start()
            log.info("MQTT uplink to \(uplink.options.settings.broker.redacted) (prefix \(uplink.options.settings.prefix))")
        }
    }

    private func startBackgroundTasks() {
        let bus = connection.bus, wifi = self.wifi, wifiQueue = self.wifiQueue
        let pollers = connection.pollers, monitors = self.monitors
        let restart = self.restart
        let log = self.log, gate = self.gate, server = self.server, notifier = self.notifier
        let cycle = settings.plan.cycleSeconds
        // Issue 18 (idle work): the periodic duties share one thread (`meterext-tick`) and allocate nothing per
        // round while nothing happens; see PeriodicThread. The LED (when the board has one) needs 50 ms rounds.
        var duties: [Housekeeping.Duty] = []
        // The board profile's status LED (set-up / meter online / meter offline).
        let led = WiFiStatusLED.duty(profile: settings.board, wifi: wifi, pollers: connection.pollers, log: log)
        // systemd's WATCHDOG=1 every half of WatchdogSec= (only under a unit that sets it).
        let pingNanos: UInt64? = notifier.isActive ? notifier.watchdogPingInterval.map { interval in
            UInt64(max(0, interval.components.seconds)) * 1_000_000_000
                + UInt64(max(0, interval.components.attoseconds) / 1_000_000_000)
        } : nil
        let period = max(1_000_000, min(led == nil ? 1_000_000_000 : WiFiStatusLED.periodNanos, pingNanos ?? .max))
        let perSecond = max(1, 1_000_000_000 / period)
        if let led { duties.append(led) }
        // Status engines and link-state log lines, once a second, per meter (issue 17).
        var last = [LinkHealth](repeating: .starting, count: pollers.count)
        let several = pollers.count > 1
        let keys = pollers.map { several ? "meter-link.\($0.unit)" : "meter-link" }
        let names = pollers.map { several ? "meter \($0.unit)" : "meter" }
        duties.append(.init(every: perSecond) {
            for i in pollers.indices {
                monitors[i].advance(now: MonotonicClock.nowSeconds())
                let s = pollers[i].snapshot()  // the generation advance just took: no copy is made
                let key = keys[i], name = names[i]
                if s.health != last[i] {
                    switch s.health {
                    case .online:
                        log.recovered(key: key, "\(name) online (serial \(s.serialNumber ?? "?"))")
                    case .stale, .offline:
                        log.failure(key: key, level: s.health == .offline ? .error : .warning,
                                    "\(name) \(s.health.rawValue): \(s.lastError?.message ?? "no answer")")
                    case .starting:
                        break
                    }
                    last[i] = s.health
                } else if s.health == .offline {
                    // Repeats are rate-limited by the logger; the counter says how many were folded.
                    log.failure(key: key, "\(name) offline: \(s.lastError?.message ?? "no answer")")
                }
            }
        })
        // Watchdog: WATCHDOG=1 only while both the poll loop and the HTTP event loop are alive.
        let limit = UInt64(max(10, cycle * 5) * 1e9)
        duties.append(.init(every: perSecond) {
            let end = bus.lastCycleEndNanos
            if end != 0 && MonotonicClock.nowNanos() &- end < limit { gate.beat(.pollLoop) }
            if server.isAlive(within: .seconds(5)) { gate.beat(.http) }
        })
        if let pingNanos {
            duties.append(.init(every: max(1, pingNanos / period)) { notifier.watchdogRound(gate: gate, logger: log) })
        }
        // WiFi retries and the access point's timeout, every 5 s, on the WiFi queue (its operations may block).
        let wifiTick = Housekeeping.QueuedWork(queue: wifiQueue) { wifi.tick(now: MonotonicClock.nowSeconds()) }
        duties.append(.init(every: 5 * perSecond) { wifiTick.submit() })
        let housekeeping = PeriodicThread(periodNanos: period, duties: duties)
        do { try housekeeping.start(name: "meterext-tick") } catch {
            log.error("cannot start the housekeeping thread: \(error)")
        }
        self.housekeeping = housekeeping
        // The board profile's set-up button: a press opens the access point.
        button = WiFiSetupButton.start(profile: settings.board, wifi: wifi, queue: wifiQueue, log: log)
        // A new firmware version on trial is confirmed once the API is up (it is, here) and the poll loop has
        // completed a cycle; if that does not happen before the deadline, the previous version comes back.
        let stateDir = settings.stateDir
        if let deadline = UpdateLauncher.trialHealthDeadline(stateDirectory: stateDir) {
            log.info("this firmware is on trial: confirming it once the poll loop runs (deadline \(deadline))")
            tasks.append(Task.detached {
                let start = MonotonicClock.now()
                while !Task.isCancelled {
                    if bus.lastCycleEndNanos != 0 {
                        do {
                            if try UpdateLauncher.markHealthy(stateDirectory: stateDir, log: { log.info($0) }) {
                                log.info("firmware confirmed healthy")
                            }
                        } catch {
                            log.error("could not confirm the firmware: \(error)")
                        }
                        return
                    }
                    if MonotonicClock.now() - start > deadline {
                        if UpdateLauncher.revertUnhealthyTrial(stateDirectory: stateDir, log: { log.error($0) }) {
                            log.error("firmware never became healthy: switched back to the previous version")
                            restart.restartService()
                        }
                        return
                    }
                    try? await Task.sleep(nanoseconds: 500_000_000)
                }
            })
        }
    }

    func stop() async {
        try? notifier.stopping()
        for task in tasks { task.cancel() }
        housekeeping?.stop()
        button?.stop()
        try? await server.stop()
        try? await modbusTCP?.stop()
        uplink?.stop()  // issue 16: availability offline, cursor written
        history?.stop()  // issue 15
        connection.bus.stop()
        simulator?.stop()
        log.info("stopped")
    }
}

/// `meter_setkey` and `meter_factreset` against the state store (and the WiFi, which a reset forgets too).
final class StoreDeviceSettings: DeviceSettings, @unchecked Sendable {
    let store: StateStore
    let wifi: WiFiManager
    let queue: DispatchQueue
    let log: @Sendable (String) -> Void

    init(store: StateStore, wifi: WiFiManager, queue: DispatchQueue, log: @escaping @Sendable (String) -> Void) {
        self.store = store
        self.wifi = wifi
        self.queue = queue
        self.log = log
    }

    func setMeterKey(_ key: String) throws {
        try store.updateConfig { $0.meterKey = Secret(key) }
    }

    /// Returns at once: the reset (file writes with fsync, nmcli calls that can take 30 s) runs on the WiFi queue,
    /// after any WiFi command already queued, never on the caller's thread (the HTTP event loop).
    func factoryReset() throws {
        let wifi = self.wifi, log = self.log
        queue.async {
            do { try wifi.factoryReset(now: MonotonicClock.nowSeconds()) } catch { log("factory reset failed: \(error)") }
            log("factory reset done")
        }
    }
}

/// `system_restart` and the restart after an update: replaces this process with a fresh start through the
/// launcher (same PID, same arguments; see `UpdateLauncher.restartProcess`), so the version that is current now
/// runs and the API port is free. Under systemd the service keeps its PID and sends READY=1 again; without
/// systemd (`make run`, a supervisor loop) it simply starts over on the same port.
final class ProcessRestart: SystemControl, @unchecked Sendable {
    let log: Logger
    init(log: Logger) { self.log = log }

    /// `system_restart` under systemd (a service has `INVOCATION_ID`): ask logind to reboot the board (allowed by
    /// board/polkit/50-meterext-login1.rules), as the description says. A development run (`make run`, no
    /// systemd) or a refused reboot (someone logged in over SSH, no polkit rule) restarts the service instead.
    func rebootBoard() {
        guard let invocation = getenv("INVOCATION_ID"), invocation.pointee != 0 else {
            log.info("system_restart: not under systemd (development run): restarting the service only")
            return restartService()
        }
        let log = self.log
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(200)) { [self] in
            log.info("rebooting the board on request (system_restart)")
            let result = try? Subprocess().run(
                "busctl", ["call", "org.freedesktop.login1", "/org/freedesktop/login1", "org.freedesktop.login1.Manager",
                           "Reboot", "b", "false"], timeout: 30)
            if let result, result.exitCode == 0, !result.timedOut { return }
            let why = result.map { $0.stderr.split(separator: "\n").first.map(String.init) ?? "exit \($0.exitCode ?? -1)" }
                ?? "busctl not found"
            log.warning("logind refused the reboot (\(why)); restarting the service instead")
            restartService()
        }
    }

    func restartService() {
        let log = self.log
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(200)) {
            log.info("restarting on request (system_restart)")
            let error = UpdateLauncher.restartProcess()
            // Only returns on failure: let the supervisor restart us.
            log.error("restart failed (\(error)); exiting so the supervisor restarts the service")
            exit(1)
        }
    }
}

// ── Issue 16 (fleet): where interval messages come from ─────────────────────────────────────────────────────────
/// The load profile for the uplink: issue 15's store, read after the uplink's cursor (Contract A). Without a store
/// (it could not be opened) there are no intervals to send; live readings still go out.
final class GatewayIntervalSource: IntervalSource, Sendable {
    private let box = Mutex<HistoryStore?>(nil)

    /// Called once while the gateway is assembled (before the uplink starts).
    func setStore(_ store: HistoryStore?) { box.withLock { $0 = store } }
    private var store: HistoryStore? { box.withLock { $0 } }

    func intervals(meter: UInt8, afterSeq: Int64, limit: Int) throws -> [UplinkInterval] {
        guard let store else { return [] }
        return try store.intervals(meter: meter, afterSeq: afterSeq, limit: limit).map { interval in
            UplinkInterval(seq: interval.seq, start: interval.start, end: interval.end,
                           values: interval.values.map { UplinkInterval.OBISValue(obis: $0.obis, value: $0.value) })
        }
    }

    func lastSeq(meter: UInt8) throws -> Int64 { try store?.lastSeq(meter: meter) ?? 0 }
}
