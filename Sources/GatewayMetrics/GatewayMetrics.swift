import KPM33B
import Prometheus
import Synchronization

/// Prometheus `/metrics` for a board (issue 16): swift-prometheus' registry and exposition, private to this object
/// (not a process-wide registry, so tests can make as many as they like). Every family has a `# HELP` line
/// (`GatewayMetrics.help`).
///
/// Meter values and counters are read from the poll loop's snapshots at scrape time (a scrape never waits on the
/// bus); counters the meter link keeps as totals are carried over as increments, so they are real Prometheus
/// counters (`_total`).
public final class GatewayMetrics: Sendable {
    public struct Meter: Sendable {
        public var address: UInt8
        public var link: any MeterLink
        public init(address: UInt8, link: any MeterLink) {
            self.address = address
            self.link = link
        }
    }

    /// The uplink's figures for a scrape (nil: MQTT is not configured).
    public struct UplinkFigures: Sendable {
        public var connected: Bool
        public var inFlight: Int
        public var backlog: Int64
        public var published: UInt64
        public var acknowledged: UInt64
        public var connects: UInt64
        public init(connected: Bool, inFlight: Int, backlog: Int64, published: UInt64, acknowledged: UInt64, connects: UInt64) {
            self.connected = connected
            self.inFlight = inFlight
            self.backlog = backlog
            self.published = published
            self.acknowledged = acknowledged
            self.connects = connects
        }
    }

    public let registry = PrometheusCollectorRegistry()
    private let meters: [Meter]
    private let uplink: (@Sendable () -> UplinkFigures?)?

    private struct State {
        /// Last totals seen, per counter key, so increments can be added.
        var lastTotals: [String: Double] = [:]
        var counters: [String: Counter] = [:]
        var gauges: [String: Gauge] = [:]
        var http: [Int: Counter] = [:]
    }
    private let state = Mutex(State())

    public init(meters: [Meter], uplink: (@Sendable () -> UplinkFigures?)? = nil) {
        self.meters = meters
        self.uplink = uplink
    }

    /// The `# HELP` text of every family this object exposes (swift-prometheus wants one text per name).
    static let help: [String: String] = [
        "meterext_http_requests_total": "HTTP replies the API server wrote, by status code.",
        "meterext_meter_up": "1 while the meter answers on the bus (link online), else 0.",
        "meterext_poll_cycle_seconds": "Duration of the meter's last poll cycle.",
        "meterext_meter_value": "Latest plausible value read from the meter, by quantity and unit.",
        "meterext_energy_kwh_total": "The meter's active energy register (kWh), by quantity.",
        "meterext_energy_kvarh_total": "The meter's reactive energy register (kvarh), by quantity.",
        "meterext_link_transactions_total": "Modbus transactions with the meter.",
        "meterext_link_results_total": "Modbus transactions with the meter, by result.",
        "meterext_link_retries_total": "Modbus transactions repeated after a failure.",
        "meterext_implausible_values_total": "Values the meter sent outside their plausible range (never served).",
        "meterext_mqtt_connected": "1 while the MQTT uplink is connected to its broker, else 0.",
        "meterext_mqtt_in_flight": "Interval messages published and not yet acknowledged by the broker.",
        "meterext_mqtt_backlog_intervals": "Recorded intervals not yet delivered to the broker, over all meters.",
        "meterext_mqtt_published_total": "Interval messages published to the broker.",
        "meterext_mqtt_acknowledged_total": "Interval messages the broker acknowledged.",
        "meterext_mqtt_connects_total": "Connections made to the broker.",
    ]

    /// One more HTTP reply with this status (called by the HTTP server for every reply it writes).
    public func countHTTP(status: Int) {
        let counter = state.withLock { s in
            if let c = s.http[status] { return c }
            let name = "meterext_http_requests_total"
            let c = registry.makeCounter(name: name, labels: [("status", String(status))], help: Self.help[name] ?? "")
            s.http[status] = c
            return c
        }
        counter.increment()
    }

    /// The text exposition (`text/plain; version=0.0.4`), with every meter value refreshed from its snapshot.
    public func render() -> [UInt8] {
        state.withLock { s in
            for meter in meters { update(&s, meter) }
            if let u = uplink?() {
                gauge(&s, "meterext_mqtt_connected", []).set(u.connected ? 1.0 : 0.0)
                gauge(&s, "meterext_mqtt_in_flight", []).set(Double(u.inFlight))
                gauge(&s, "meterext_mqtt_backlog_intervals", []).set(Double(u.backlog))
                total(&s, "meterext_mqtt_published_total", [], Double(u.published))
                total(&s, "meterext_mqtt_acknowledged_total", [], Double(u.acknowledged))
                total(&s, "meterext_mqtt_connects_total", [], Double(u.connects))
            }
        }
        return registry.emitToBuffer()
    }

    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    // MARK: internals

    static func quantity(_ register: FloatRegister) -> String {
        var out = ""
        for ch in register.name.lowercased() {
            let c: Character = ch.isLetter || ch.isNumber ? ch : "_"
            if c == "_" && (out.isEmpty || out.last == "_") { continue }
            out.append(c)
        }
        return out.hasSuffix("_") ? String(out.dropLast()) : out
    }

    private func update(_ s: inout State, _ meter: Meter) {
        let snap = meter.link.snapshot()
        let m = ("meter", String(meter.address))
        gauge(&s, "meterext_meter_up", [m]).set(snap.health == .online ? 1.0 : 0.0)
        gauge(&s, "meterext_poll_cycle_seconds", [m]).set(Double(snap.cycleMicroseconds) / 1e6)
        for register in Register.allBasic {
            guard let v = snap.value(register) else { continue }
            let unit = register.unit.rawValue.isEmpty ? "1" : register.unit.rawValue
            gauge(&s, "meterext_meter_value", [m, ("quantity", Self.quantity(register)), ("unit", unit)]).set(Double(v))
        }
        for register in Register.allEnergy {
            guard let v = snap.value(register) else { continue }
            let name = register.unit == .kilowattHour ? "meterext_energy_kwh_total" : "meterext_energy_kvarh_total"
            total(&s, name, [m, ("quantity", Self.quantity(register))], Double(v))
        }
        let c = snap.counters
        let results: [(String, UInt64)] = [
            ("succeeded", c.succeeded), ("timeout", c.timeouts), ("crc", c.crcErrors), ("exception", c.exceptions),
            ("wrong_slave", c.wrongSlave), ("wrong_function", c.wrongFunction), ("malformed", c.malformed),
            ("io", c.ioErrors),
        ]
        total(&s, "meterext_link_transactions_total", [m], Double(c.transactions))
        for (result, n) in results {
            total(&s, "meterext_link_results_total", [m, ("result", result)], Double(n))
        }
        total(&s, "meterext_link_retries_total", [m], Double(c.retries))
        total(&s, "meterext_implausible_values_total", [m], Double(snap.implausibleValues))
    }

    private func key(_ name: String, _ dims: [(String, String)]) -> String {
        name + "{" + dims.map { "\($0.0)=\($0.1)" }.joined(separator: ",") + "}"
    }

    private func gauge(_ s: inout State, _ name: String, _ dims: [(String, String)]) -> Gauge {
        let k = key(name, dims)
        if let g = s.gauges[k] { return g }
        let g = registry.makeGauge(name: name, labels: dims, help: Self.help[name] ?? "")
        s.gauges[k] = g
        return g
    }

    /// Brings a counter up to a total kept elsewhere: only what goes beyond the highest total seen is added, so a
    /// value that dips and comes back (a glitch the plausibility check let through) is never counted twice. The
    /// exposed counter equals the meter's own total, also across service restarts (it starts at that total).
    private func total(_ s: inout State, _ name: String, _ dims: [(String, String)], _ value: Double) {
        let k = key(name, dims)
        let counter: Counter
        if let c = s.counters[k] { counter = c } else {
            counter = registry.makeCounter(name: name, labels: dims, help: Self.help[name] ?? "")
            s.counters[k] = counter
        }
        let last = s.lastTotals[k] ?? 0
        if value > last {
            counter.increment(by: value - last)
            s.lastTotals[k] = value
        }
    }
}
