/// One load-profile interval as the uplink sends it (issue 15's `ProfileInterval`, carried over by the gateway).
public struct UplinkInterval: Sendable, Equatable {
    public var seq: Int64
    public var start: Int64
    public var end: Int64
    public var values: [OBISValue]

    public struct OBISValue: Sendable, Equatable {
        public var obis: String
        public var value: Double
        public init(obis: String, value: Double) {
            self.obis = obis
            self.value = value
        }
    }

    public init(seq: Int64, start: Int64, end: Int64, values: [OBISValue]) {
        self.seq = seq
        self.start = start
        self.end = end
        self.values = values
    }
}

/// Why the session is not (or no longer) online, as `system_status` reports it.
public enum UplinkState: String, Sendable, Equatable {
    case disabled, connecting, connected
    /// CONNACK 0x86/0x87 (MQTT 5) or 4/5 (3.1.1): user name, password or client certificate not accepted.
    case refusedCredentials = "refused_credentials"
    /// Any other CONNACK refusal (protocol version, client id, server unavailable…).
    case refused
    /// The TLS handshake failed (wrong CA, expired or mismatching certificate).
    case tlsError = "tls_error"
    /// No TCP connection (name not resolved, connection refused, timeout).
    case unreachable
    /// Connected, but PUBACKs stopped coming: the window stayed full longer than the ack timeout.
    case noAcks = "no_acks"
    case disconnected
}

/// The MQTT session as a state machine without I/O (issue 16): events in (connect result, PUBACK, messages, store
/// reads, time), actions out (connect, publish, fetch from the store, persist the cursor). The executor
/// (`MQTTUplink`) performs the actions on its own thread and never decides anything.
///
/// Store-and-forward: interval messages are read from the persistent store after the per-meter cursor (the last
/// seq whose PUBACK came, and every seq before it too); at most `window` are in flight, nothing else is held in memory.
/// A connection that drops loses its in-flight messages: they are read again from the cursor and sent again with
/// the same seq (a repeat, never a gap or a new seq).
public struct UplinkMachine: Sendable {
    public struct Config: Sendable, Equatable {
        /// QoS 1 interval messages in flight (published, PUBACK not yet seen).
        public var window = 8
        public var backoffInitial = 1.0
        public var backoffMax = 60.0
        /// A connect attempt that has no CONNACK after this long is given up.
        public var connectTimeout = 30.0
        /// The oldest in-flight message waited this long for its PUBACK: status `no_acks`, reconnect.
        public var ackTimeout = 30.0
        /// `--mqtt-live-interval`.
        public var liveInterval = 10.0
        /// The store is asked again for new intervals at most this often while it had none.
        public var storePollInterval = 1.0
        /// The cursor file is written at most this often (a crash resends at most this much, with the same seq).
        public var persistInterval = 2.0
        /// The meter link's `status` message at most this often (and at once when it changes).
        public var statusInterval = 60.0
        public init() {}
    }

    public enum ConnectFailure: Sendable, Equatable {
        case credentials(String)
        case refused(String)
        case tls(String)
        case unreachable(String)
    }

    public enum Event: Sendable, Equatable {
        case start
        case tick
        /// CONNACK accepted.
        case connected
        case connectFailed(ConnectFailure)
        case disconnected(String)
        /// The executor published an interval action and libmosquitto gave it this message id.
        case intervalPublished(meter: UInt8, seq: Int64, mid: Int32)
        /// The publish call failed at once (not connected, out of memory): handled as a lost connection.
        case publishFailed(String)
        case puback(mid: Int32)
        /// The store's answer to `.fetch` (ascending seq, after the asked seq).
        case fetched(meter: UInt8, intervals: [UplinkInterval])
        case fetchFailed(meter: UInt8, String)
        /// Meters whose id (serial number) is known now: address → meter id; their link state for `availability`.
        case meters([MeterPresence])
        case message(topic: String, payload: [UInt8])
    }

    public struct MeterPresence: Sendable, Equatable {
        public var address: UInt8
        public var meterID: String
        public var online: Bool
        public init(address: UInt8, meterID: String, online: Bool) {
            self.address = address
            self.meterID = meterID
            self.online = online
        }
    }

    public enum Action: Sendable, Equatable {
        /// Tear down any old client and connect a new one (clean start, last will set).
        case connect
        /// Drop the connection (no PUBACKs, connect timeout); a `disconnected` event is not expected back.
        case disconnect(String)
        case subscribe([String])
        /// Retained `online` on the board's availability topic (the last will says `offline`).
        case publishBoardOnline
        /// Retained discovery configs for this meter (and its meter-link availability).
        case announceDiscovery(MeterPresence)
        case publishAvailability(MeterPresence)
        case publishLive(MeterPresence)
        case publishStatus(MeterPresence)
        case publishInterval(meterID: String, meter: UInt8, UplinkInterval)
        case fetch(meter: UInt8, afterSeq: Int64, limit: Int)
        case persistCursors([UInt8: Int64])
        case setRelay(meter: UInt8, on: Bool)
        case log(error: Bool, String)
    }

    private enum Connection: Sendable, Equatable {
        case idle
        case connecting(since: Double)
        case online(since: Double)
        case waiting(until: Double)
    }

    private struct InFlight: Sendable, Equatable {
        var meter: UInt8
        var seq: Int64
        var mid: Int32?
        var sentAt: Double
    }

    private struct MeterStream: Sendable, Equatable {
        var presence: MeterPresence
        /// Last seq acknowledged with every earlier one: what the cursor file holds.
        var cursor: Int64
        /// Highest seq handed to the executor on this connection (≥ cursor).
        var sentUpTo: Int64
        /// Acknowledged seqs above the cursor, waiting for an earlier one's PUBACK.
        var ackedAhead: [Int64] = []
        /// Fetched, not yet published (at most the window's free room).
        var pending: [UplinkInterval] = []
        var fetching = false
        var lastEmptyFetch: Double = -.infinity
        var lastLive: Double = -.infinity
        var lastStatus: Double = -.infinity
        var announced = false
        var lastOnline: Bool?
    }

    public let config: Config
    public let commandsEnabled: Bool
    public let commandTopicPrefix: String
    private var connection: Connection = .idle
    private var attempts = 0
    private var streams: [UInt8: MeterStream] = [:]
    private var savedCursors: [UInt8: Int64]
    private var persistedCursors: [UInt8: Int64]
    private var lastPersist: Double = -.infinity
    private var inflight: [InFlight] = []
    public private(set) var state: UplinkState = .disabled
    public private(set) var detail = ""
    public private(set) var published: UInt64 = 0
    public private(set) var acknowledged: UInt64 = 0
    public private(set) var connects: UInt64 = 0

    /// - Parameters:
    ///   - cursors: the cursor file's content (last PUBACKed seq per meter address); a meter without one starts at
    ///     seq 0 (everything in the store is sent).
    ///   - commandTopicPrefix: `<prefix>/` — relay commands come on `<prefix>/<meterid>/relay/set`.
    public init(config: Config = Config(), cursors: [UInt8: Int64] = [:], commandsEnabled: Bool = false,
                commandTopicPrefix: String = "meterext/") {
        self.config = config
        self.savedCursors = cursors
        self.persistedCursors = cursors
        self.commandsEnabled = commandsEnabled
        self.commandTopicPrefix = commandTopicPrefix
    }

    public var inFlightCount: Int { inflight.count }
    public var isOnline: Bool { if case .online = connection { true } else { false } }
    public func cursor(meter: UInt8) -> Int64? { streams[meter]?.cursor ?? savedCursors[meter] }
    public var cursors: [UInt8: Int64] {
        var all = savedCursors
        for (address, s) in streams { all[address] = s.cursor }
        return all
    }

    // MARK: events in

    public mutating func handle(_ event: Event, now: Double) -> [Action] {
        var out: [Action] = []
        switch event {
        case .start:
            guard case .idle = connection else { return [] }
            beginConnect(now, &out)
        case .tick:
            onTick(now, &out)
        case .connected:
            guard case .connecting = connection else { return [] }
            connection = .online(since: now)
            attempts = 0
            connects += 1
            // After `no_acks` the reason stays visible until a PUBACK proves the broker acknowledges again.
            if state != .noAcks {
                state = .connected
                detail = ""
            }
            out.append(.log(error: false, "MQTT connected"))
            var topics = ["homeassistant/status"]
            if commandsEnabled { topics.append(commandTopicPrefix + "+/relay/set") }
            out.append(.subscribe(topics))
            out.append(.publishBoardOnline)
            for address in streams.keys.sorted() {
                streams[address]!.announced = false
                streams[address]!.lastOnline = nil
                streams[address]!.lastStatus = -.infinity
            }
            onTick(now, &out)
        case .connectFailed(let failure):
            guard case .connecting = connection else { return [] }
            let (s, text): (UplinkState, String)
            switch failure {
            case .credentials(let m): (s, text) = (.refusedCredentials, m)
            case .refused(let m): (s, text) = (.refused, m)
            case .tls(let m): (s, text) = (.tlsError, m)
            case .unreachable(let m): (s, text) = (.unreachable, m)
            }
            lose(now, state: s, detail: text, &out)
        case .disconnected(let why):
            switch connection {
            case .online, .connecting: lose(now, state: state == .noAcks ? .noAcks : .disconnected, detail: why, &out)
            default: break
            }
        case .publishFailed(let why):
            if case .online = connection {
                out.append(.disconnect(why))
                lose(now, state: .disconnected, detail: why, &out)
            }
        case .intervalPublished(let meter, let seq, let mid):
            if let i = inflight.firstIndex(where: { $0.meter == meter && $0.seq == seq && $0.mid == nil }) {
                inflight[i].mid = mid
            }
        case .puback(let mid):
            guard let i = inflight.firstIndex(where: { $0.mid == mid }) else { return [] }
            let done = inflight.remove(at: i)
            acknowledged += 1
            if state == .noAcks { state = .connected; detail = "" }
            advanceCursor(done.meter, acked: done.seq)
            fill(now, &out)
            persistIfDue(now, &out)
        case .fetched(let meter, let intervals):
            guard var s = streams[meter] else { return [] }
            s.fetching = false
            // Only what follows what was already sent, in order (a store answer that raced a reconnect is re-read).
            let fresh = intervals.filter { $0.seq > max(s.sentUpTo, s.pending.last?.seq ?? .min) }
            if fresh.isEmpty { s.lastEmptyFetch = now }
            s.pending.append(contentsOf: fresh)
            streams[meter] = s
            fill(now, &out)
        case .fetchFailed(let meter, let why):
            streams[meter]?.fetching = false
            streams[meter]?.lastEmptyFetch = now
            out.append(.log(error: true, "MQTT: reading intervals of meter \(meter) from the store failed: \(why)"))
        case .meters(let list):
            for p in list {
                if var s = streams[p.address] {
                    if s.presence.meterID != p.meterID { s.announced = false }
                    s.presence = p
                    streams[p.address] = s
                } else {
                    let c = savedCursors[p.address] ?? 0
                    streams[p.address] = MeterStream(presence: p, cursor: c, sentUpTo: c)
                    if persistedCursors[p.address] == nil { persistedCursors[p.address] = c }  // nothing new to write
                }
            }
            onTick(now, &out)
        case .message(let topic, let payload):
            if topic == "homeassistant/status" {
                if payload == Array("online".utf8), isOnline {
                    // HA restarted and lost the non-retained state: announce again.
                    for address in streams.keys.sorted() {
                        out.append(.announceDiscovery(streams[address]!.presence))
                        out.append(.publishAvailability(streams[address]!.presence))
                        streams[address]!.lastLive = -.infinity
                    }
                }
            } else if commandsEnabled, topic.hasPrefix(commandTopicPrefix), topic.hasSuffix("/relay/set") {
                let id = topic.dropFirst(commandTopicPrefix.count).dropLast("/relay/set".count)
                guard let s = streams.values.first(where: { $0.presence.meterID == id }) else { return [] }
                switch String(decoding: payload, as: UTF8.self).uppercased() {
                case "ON": out.append(.setRelay(meter: s.presence.address, on: true))
                case "OFF": out.append(.setRelay(meter: s.presence.address, on: false))
                default: out.append(.log(error: true, "MQTT: relay command must be ON or OFF; ignored"))
                }
            }
        }
        return out
    }

    // MARK: internals

    private mutating func beginConnect(_ now: Double, _ out: inout [Action]) {
        connection = .connecting(since: now)
        if state == .disabled || state == .connected { state = .connecting }
        out.append(.connect)
    }

    private mutating func lose(_ now: Double, state s: UplinkState, detail text: String, _ out: inout [Action]) {
        let delay = min(config.backoffMax, config.backoffInitial * Double(1 << min(attempts, 16)))
        attempts += 1
        connection = .waiting(until: now + delay)
        let changed = state != s || detail != text
        state = s
        detail = text
        // What was in flight is read again from the store (same seq) on the next connection.
        inflight.removeAll()
        for address in streams.keys {
            streams[address]!.pending.removeAll()
            streams[address]!.ackedAhead.removeAll()
            streams[address]!.sentUpTo = streams[address]!.cursor
            streams[address]!.fetching = false
            streams[address]!.lastEmptyFetch = -.infinity
        }
        if changed { out.append(.log(error: true, "MQTT \(s.rawValue): \(text); retrying in \(Int(delay)) s")) }
        persistIfDue(now, &out, force: true)
    }

    private mutating func onTick(_ now: Double, _ out: inout [Action]) {
        switch connection {
        case .idle:
            return
        case .waiting(let until):
            if now >= until { beginConnect(now, &out) }
            return
        case .connecting(let since):
            if now - since >= config.connectTimeout {
                out.append(.disconnect("no CONNACK within \(Int(config.connectTimeout)) s"))
                lose(now, state: .unreachable, detail: "the broker did not answer CONNECT within \(Int(config.connectTimeout)) s", &out)
            }
            return
        case .online(let since):
            // Nothing was waiting for a PUBACK for a whole ack timeout after `no_acks`: nothing is wrong any more.
            if state == .noAcks, inflight.isEmpty, now - since >= config.ackTimeout {
                state = .connected
                detail = ""
            }
        }
        if let oldest = inflight.first, now - oldest.sentAt >= config.ackTimeout {
            let why = "no PUBACK from the broker for \(Int(config.ackTimeout)) s (\(inflight.count) in flight)"
            out.append(.disconnect(why))
            lose(now, state: .noAcks, detail: why, &out)
            return
        }
        for address in streams.keys.sorted() {
            var s = streams[address]!
            if !s.announced {
                s.announced = true
                out.append(.announceDiscovery(s.presence))
            }
            if s.lastOnline != s.presence.online {
                s.lastOnline = s.presence.online
                out.append(.publishAvailability(s.presence))
                out.append(.publishStatus(s.presence))
                s.lastStatus = now
            } else if now - s.lastStatus >= config.statusInterval {
                out.append(.publishStatus(s.presence))
                s.lastStatus = now
            }
            if s.presence.online && now - s.lastLive >= config.liveInterval {
                out.append(.publishLive(s.presence))
                s.lastLive = now
            }
            streams[address] = s
        }
        fill(now, &out)
        persistIfDue(now, &out)
    }

    /// Publishes pending intervals while the window has room; asks the store for more when a meter has none.
    private mutating func fill(_ now: Double, _ out: inout [Action]) {
        guard case .online = connection else { return }
        for address in streams.keys.sorted() {
            var s = streams[address]!
            while inflight.count < config.window, !s.pending.isEmpty {
                let interval = s.pending.removeFirst()
                inflight.append(InFlight(meter: address, seq: interval.seq, mid: nil, sentAt: now))
                s.sentUpTo = interval.seq
                published += 1
                out.append(.publishInterval(meterID: s.presence.meterID, meter: address, interval))
            }
            let room = config.window - inflight.count
            if room > 0, s.pending.isEmpty, !s.fetching, now - s.lastEmptyFetch >= config.storePollInterval {
                s.fetching = true
                out.append(.fetch(meter: address, afterSeq: s.sentUpTo, limit: room))
            }
            streams[address] = s
        }
    }

    private mutating func advanceCursor(_ meter: UInt8, acked seq: Int64) {
        guard var s = streams[meter] else { return }
        s.ackedAhead.append(seq)
        s.ackedAhead.sort()
        let firstOpen = inflight.filter { $0.meter == meter }.map(\.seq).min() ?? .max
        while let first = s.ackedAhead.first, first < firstOpen {
            s.cursor = max(s.cursor, first)
            s.ackedAhead.removeFirst()
        }
        streams[meter] = s
    }

    private mutating func persistIfDue(_ now: Double, _ out: inout [Action], force: Bool = false) {
        let current = cursors
        guard current != persistedCursors, force || now - lastPersist >= config.persistInterval else { return }
        persistedCursors = current
        lastPersist = now
        out.append(.persistCursors(current))
    }

    /// What is left to write at shutdown.
    public mutating func finalCursors() -> [UInt8: Int64]? {
        let current = cursors
        guard current != persistedCursors else { return nil }
        persistedCursors = current
        return current
    }
}
