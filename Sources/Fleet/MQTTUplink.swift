import CMosquitto
import Glibc
import KPM33B
import Platform
import Synchronization

/// Where interval messages come from: the history store's load profile (issue 15), read after a cursor.
public protocol IntervalSource: Sendable {
    /// Intervals of meter `meter` with seq > `afterSeq`, ascending, at most `limit`.
    func intervals(meter: UInt8, afterSeq: Int64, limit: Int) throws -> [UplinkInterval]
    /// The highest seq stored for the meter (0 when none).
    func lastSeq(meter: UInt8) throws -> Int64
}

/// One meter the uplink publishes for (Contract C: every meter by its Modbus address and its link).
public struct UplinkMeter: Sendable {
    public var address: UInt8
    public var link: any MeterLink
    public init(address: UInt8, link: any MeterLink) {
        self.address = address
        self.link = link
    }
}

/// What `system_status` and `/metrics` show of the uplink. Never holds the password.
public struct UplinkStatus: Sendable, Equatable {
    public var state: UplinkState = .disabled
    public var broker = ""
    public var detail = ""
    public var inFlight = 0
    /// Intervals in the store after the cursor (by seq), summed over the meters.
    public var backlog: Int64 = 0
    public var published: UInt64 = 0
    public var acknowledged: UInt64 = 0
    public var connects: UInt64 = 0
    public var protocolVersion = "5"
    public init() {}

    /// The `mqtt` object of `system_status`.
    public var fields: [String: String] {
        ["state": state.rawValue, "broker": broker, "detail": detail, "in_flight": String(inFlight),
         "backlog": String(backlog), "published": String(published), "acknowledged": String(acknowledged),
         "connects": String(connects), "protocol": protocolVersion]
    }
}

/// The thin executor (issue 16): runs `UplinkMachine` on its own thread (`meterext-mqtt`) with libmosquitto's
/// `mosquitto_loop` — never on a NIO event loop, never on the poll thread — and performs its actions: connect,
/// publish, read the store, write the cursor file. It decides nothing itself.
public final class MQTTUplink: @unchecked Sendable {
    public struct Options: Sendable {
        public var settings: UplinkSettings
        public var machine = UplinkMachine.Config()
        public var softwareVersion = "0"
        /// Keepalive sent in CONNECT; a broker that stops answering is noticed within 1.5 × this.
        public var keepalive: Int32 = 30
        public init(settings: UplinkSettings) { self.settings = settings }
    }

    public let options: Options
    public let topics: UplinkTopics
    private let meters: [UplinkMeter]
    private let source: any IntervalSource
    private let cursorFile: CursorFile
    private let amiCode: @Sendable (UInt8) -> Int?
    private let log: @Sendable (_ error: Bool, _ message: String) -> Void
    private let statusBox = Mutex(UplinkStatus())
    private let running = Atomic<Bool>(false)
    private var thread: OSThread?

    // Loop-thread state (only the `meterext-mqtt` thread touches these).
    private var machine: UplinkMachine
    private var mosq: OpaquePointer?
    private var events: [UplinkMachine.Event] = []
    private var useV311 = false
    private var lastPresence: [UplinkMachine.MeterPresence] = []
    private var lastPresenceCheck = -Double.infinity
    private var lastBacklog = -Double.infinity
    private var backlog: Int64 = 0

    /// - Parameters:
    ///   - amiCode: the status engine's AMI code for a meter address (for the `status` topic).
    ///   - log: one line per event an operator should see; never receives the password.
    public init(options: Options, meters: [UplinkMeter], source: any IntervalSource, stateDirectory: String,
                amiCode: @escaping @Sendable (UInt8) -> Int? = { _ in nil },
                log: @escaping @Sendable (_ error: Bool, _ message: String) -> Void) {
        self.options = options
        self.meters = meters
        self.source = source
        self.amiCode = amiCode
        self.log = log
        topics = UplinkTopics(prefix: options.settings.prefix, clientID: UplinkTopics.level(options.settings.clientID))
        cursorFile = CursorFile(stateDirectory: stateDirectory)
        var cursors: [UInt8: Int64] = [:]
        do { cursors = try cursorFile.load() } catch {
            log(true, "MQTT cursor file \(cursorFile.path) unreadable (\(error)): sending the stored intervals from the start")
        }
        var config = options.machine
        config.liveInterval = options.settings.liveInterval
        machine = UplinkMachine(config: config, cursors: cursors, commandsEnabled: options.settings.commands,
                                commandTopicPrefix: options.settings.prefix + "/")
        statusBox.withLock {
            $0.broker = options.settings.broker.redacted
            $0.state = .connecting
        }
    }

    public func status() -> UplinkStatus { statusBox.withLock { $0 } }

    /// Loads libmosquitto (issue 18: only a board with an uplink maps it and OpenSSL) and starts the thread. Throws
    /// when the library cannot be loaded (the error names the Debian package) or the thread cannot be made.
    public func start() throws(SystemError) {
        if let failure = cmosq_load() {
            throw SystemError(operation: "MQTT uplink", errno: 0, detail: String(cString: failure))
        }
        running.store(true, ordering: .releasing)
        thread = try OSThread(name: "meterext-mqtt") { [self] in run() }
    }

    /// Disconnects cleanly (the board's availability goes `offline`), writes the cursor, joins the thread.
    public func stop() {
        guard running.exchange(false, ordering: .acquiringAndReleasing) else { return }
        thread?.join()
        thread = nil
    }

    // MARK: the loop

    private func run() {
        feed(.start)
        while running.load(ordering: .acquiring) {
            let now = MonotonicClock.nowSeconds()
            if now - lastPresenceCheck >= 1 {
                lastPresenceCheck = now
                let presence = currentPresence()
                if presence != lastPresence {
                    lastPresence = presence
                    feed(.meters(presence))
                }
            }
            feed(.tick)
            if let m = mosq {
                let rc = cmosq_loop(m, 100, 1)
                if rc != MOSQ_ERR_SUCCESS.rawValue {
                    events.append(rc == MOSQ_ERR_TLS.rawValue
                                  ? .connectFailed(.tls("TLS error: \(Self.tlsReason())"))
                                  : machine.isOnline ? .disconnected(Self.describe(rc)) : .connectFailed(.unreachable(Self.describe(rc))))
                    destroyClient()
                }
                drainEvents()
            } else {
                MonotonicClock.sleep(nanos: 100_000_000)
            }
            refreshStatus(now: now)
        }
        // Shutting down: offline (retained) while we still can, then the cursor.
        if let m = mosq, machine.isOnline {
            let offline = Array("offline".utf8)
            _ = cmosq_publish(m, nil, topics.board, Int32(offline.count), offline, 1, true)
            for meter in lastPresence {
                _ = cmosq_publish(m, nil, topics.availability(meter.meterID), Int32(offline.count), offline, 1, true)
            }
            _ = cmosq_loop(m, 100, 1)
            cmosq_disconnect(m)
            _ = cmosq_loop(m, 100, 1)
        }
        destroyClient()
        if let final = machine.finalCursors() { persist(final) }
    }

    private func currentPresence() -> [UplinkMachine.MeterPresence] {
        meters.compactMap { meter in
            let s = meter.link.snapshot()
            guard let id = s.serialNumber, !id.isEmpty else { return nil }
            return UplinkMachine.MeterPresence(address: meter.address, meterID: UplinkTopics.level(id), online: s.health == .online)
        }
    }

    private func feed(_ event: UplinkMachine.Event) {
        events.append(event)
        drainEvents()
    }

    /// Events (callbacks, store answers) in arrival order; each one's actions run before the next event.
    private func drainEvents() {
        while !events.isEmpty {
            let event = events.removeFirst()
            for action in machine.handle(event, now: MonotonicClock.nowSeconds()) { perform(action) }
        }
    }

    private func refreshStatus(now: Double) {
        if now - lastBacklog >= 1 {
            lastBacklog = now
            var total: Int64 = 0
            for meter in meters {
                if let last = try? source.lastSeq(meter: meter.address) {
                    total += max(0, last - (machine.cursor(meter: meter.address) ?? 0))
                }
            }
            backlog = total
        }
        let m = machine, b = backlog, v311 = useV311
        statusBox.withLock {
            $0.state = m.state == .disabled ? .connecting : m.state
            $0.detail = m.detail
            $0.inFlight = m.inFlightCount
            $0.backlog = b
            $0.published = m.published
            $0.acknowledged = m.acknowledged
            $0.connects = m.connects
            $0.protocolVersion = v311 ? "3.1.1" : "5"
        }
    }

    // MARK: actions

    private func perform(_ action: UplinkMachine.Action) {
        switch action {
        case .connect:
            connect()
        case .disconnect(let why):
            log(true, "MQTT: dropping the connection: \(why)")
            if let m = mosq { cmosq_disconnect(m) }
            destroyClient()
        case .subscribe(let list):
            for topic in list { if let m = mosq { _ = cmosq_subscribe(m, nil, topic, 1) } }
        case .publishBoardOnline:
            publish(topics.board, Array("online".utf8), qos: 1, retain: true)
        case .announceDiscovery(let meter):
            for (topic, payload) in UplinkPayloads.discovery(
                meterID: meter.meterID, topics: topics, liveInterval: options.settings.liveInterval,
                commands: options.settings.commands, softwareVersion: options.softwareVersion) {
                publish(topic, payload, qos: 1, retain: true)
            }
        case .publishAvailability(let meter):
            publish(topics.availability(meter.meterID), Array((meter.online ? "online" : "offline").utf8), qos: 1, retain: true)
        case .publishLive(let meter):
            // QoS 0 and never queued: skipped while earlier bytes still wait for the socket.
            guard let m = mosq, !cmosq_want_write(m),
                  let link = meters.first(where: { $0.address == meter.address })?.link else { return }
            let s = link.snapshot()
            if let body = UplinkPayloads.reading(meterID: meter.meterID, snapshot: s) {
                publish(topics.reading(meter.meterID), body, qos: 0, retain: false)
            }
            if options.settings.commands, let relay = s.relay {
                publish(topics.relayState(meter.meterID), Array((relay.closed ? "ON" : "OFF").utf8), qos: 0, retain: true)
            }
        case .publishStatus(let meter):
            guard let link = meters.first(where: { $0.address == meter.address })?.link else { return }
            let s = link.snapshot()
            publish(topics.status(meter.meterID),
                    UplinkPayloads.status(meterID: meter.meterID, link: s.health.rawValue, ami: amiCode(meter.address),
                                          ts: wallClockSeconds()), qos: 0, retain: true)
        case .publishInterval(let meterID, let address, let interval):
            guard let m = mosq else { events.append(.publishFailed("not connected")); return }
            var mid: Int32 = 0
            let body = UplinkPayloads.interval(meterID: meterID, interval)
            let rc = body.withUnsafeBytes { cmosq_publish(m, &mid, topics.interval(meterID), Int32($0.count), $0.baseAddress, 1, false) }
            if rc == MOSQ_ERR_SUCCESS.rawValue {
                events.append(.intervalPublished(meter: address, seq: interval.seq, mid: mid))
            } else {
                events.append(.publishFailed("publish failed: \(Self.describe(rc))"))
            }
        case .fetch(let meter, let after, let limit):
            do {
                events.append(.fetched(meter: meter, intervals: try source.intervals(meter: meter, afterSeq: after, limit: limit)))
            } catch {
                events.append(.fetchFailed(meter: meter, "\(error)"))
            }
        case .persistCursors(let cursors):
            persist(cursors)
        case .setRelay(let meter, let on):
            guard let link = meters.first(where: { $0.address == meter })?.link else { return }
            let log = self.log
            log(false, "MQTT: relay \(on ? "on" : "off") requested for meter \(meter) through the broker")
            Task.detached {
                do { _ = try await link.setRelay(closed: on) } catch { log(true, "MQTT relay command failed: \(error)") }
            }
        case .log(let error, let message):
            log(error, message)
        }
    }

    private func persist(_ cursors: [UInt8: Int64]) {
        do { try cursorFile.save(cursors) } catch { log(true, "MQTT: cannot write \(cursorFile.path): \(error)") }
    }

    private func publish(_ topic: String, _ payload: [UInt8], qos: Int32, retain: Bool) {
        guard let m = mosq else { return }
        _ = payload.withUnsafeBytes { cmosq_publish(m, nil, topic, Int32($0.count), $0.baseAddress, qos, retain) }
    }

    private func connect() {
        destroyClient()
        let s = options.settings
        let context = Unmanaged.passUnretained(self).toOpaque()
        guard let m = cmosq_new(s.clientID, true, context) else {
            events.append(.connectFailed(.unreachable("libmosquitto could not create a client (out of memory?)")))
            return
        }
        mosq = m
        _ = cmosq_int_option(m, MOSQ_OPT_PROTOCOL_VERSION, useV311 ? MQTT_PROTOCOL_V311 : MQTT_PROTOCOL_V5)
        if let user = s.broker.username { _ = cmosq_username_pw_set(m, user, s.broker.password) }
        if s.broker.tls {
            let rc = cmosq_tls_set(m, s.caFile, s.caFile == nil ? "/etc/ssl/certs" : nil, s.certFile, s.keyFile, nil)
            if rc != MOSQ_ERR_SUCCESS.rawValue {
                events.append(.connectFailed(.tls("TLS set-up failed (CA/certificate/key files): \(Self.describe(rc))")))
                destroyClient()
                return
            }
        }
        let offline = Array("offline".utf8)
        _ = cmosq_will_set(m, topics.board, Int32(offline.count), offline, 1, true)
        cmosq_connect_v5_callback_set(m) { _, obj, rc, _, _ in
            MQTTUplink.from(obj).onConnect(rc)
        }
        cmosq_disconnect_v5_callback_set(m) { _, obj, rc, _ in
            MQTTUplink.from(obj).onDisconnect(rc)
        }
        cmosq_publish_v5_callback_set(m) { _, obj, mid, reason, _ in
            MQTTUplink.from(obj).onPublish(mid: mid, reason: reason)
        }
        cmosq_message_v5_callback_set(m) { _, obj, message, _ in
            guard let message, let topic = message.pointee.topic else { return }
            let payload = message.pointee.payloadlen > 0 && message.pointee.payload != nil
                ? Array(UnsafeRawBufferPointer(start: message.pointee.payload, count: Int(message.pointee.payloadlen)))
                : []
            MQTTUplink.from(obj).events.append(.message(topic: String(cString: topic), payload: payload))
        }
        // Blocking TCP connect (and TLS handshake) on this thread only.
        let rc = cmosq_connect(m, s.broker.host, Int32(s.broker.port), options.keepalive)
        if rc != MOSQ_ERR_SUCCESS.rawValue {
            if rc == MOSQ_ERR_TLS.rawValue {
                events.append(.connectFailed(.tls("TLS handshake with \(s.broker.host) failed: \(Self.tlsReason())")))
            } else {
                events.append(.connectFailed(.unreachable("cannot reach \(s.broker.host):\(s.broker.port): \(Self.describe(rc))")))
            }
            destroyClient()
        }
    }

    private static func from(_ obj: UnsafeMutableRawPointer?) -> MQTTUplink {
        Unmanaged<MQTTUplink>.fromOpaque(obj!).takeUnretainedValue()
    }

    private func onConnect(_ rc: Int32) {
        if rc == 0 { events.append(.connected); return }
        let v5 = !useV311
        let text = String(cString: v5 ? cmosq_reason_string(rc) : cmosq_connack_string(rc))
        // 0x84 (MQTT 5), or a 3.1.1 broker's "unacceptable protocol version" (1) in answer to an MQTT 5 CONNECT:
        // the broker is older; the next attempt speaks 3.1.1.
        if v5 && (rc == 0x84 || rc == 1) { useV311 = true }
        let credentials = v5 ? (rc == 0x86 || rc == 0x87 || rc == 0x8C) : (rc == 4 || rc == 5)
        events.append(.connectFailed(credentials ? .credentials("the broker refused the credentials: \(text)")
                                                 : .refused("the broker refused the connection: \(text)")))
    }

    private func onDisconnect(_ rc: Int32) {
        events.append(.disconnected(rc == 0 ? "disconnected" : "connection lost: \(Self.describe(rc))"))
    }

    private func onPublish(mid: Int32, reason: Int32) {
        if reason >= 0x80 {
            events.append(.publishFailed("the broker refused a message: \(String(cString: cmosq_reason_string(reason)))"))
        } else {
            events.append(.puback(mid: mid))
        }
    }

    private func destroyClient() {
        if let m = mosq {
            cmosq_destroy(m)
            mosq = nil
        }
    }

    static func describe(_ rc: Int32) -> String {
        if rc == MOSQ_ERR_ERRNO.rawValue { return String(cString: strerror(errno)) }
        return String(cString: cmosq_strerror(rc))
    }

    /// libmosquitto reports TLS failures through OpenSSL's error queue only to its log; say what usually causes it.
    static func tlsReason() -> String {
        "certificate not trusted by the CA file, wrong host name, or the broker does not speak TLS on this port"
    }
}
