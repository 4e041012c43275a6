import CoreMetrics
import KPM33B
import Prometheus
import Synchronization

/// Prometheus `/metrics` for a board (issue 16): swift-metrics' types on swift-prometheus' back end, in a private
/// registry (not the process-wide `MetricsSystem`, so tests can make as many as they like).
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
    private let factory: PrometheusMetricsFactory
    private let meters: [Meter]
    private let uplink: (@Sendable () -> UplinkFigures?)?

    private struct State {
        /// Last totals seen, per counter key, so increments can be added.
        var lastTotals: [String: Double] = [:]
        var counters: [String: CoreMetrics.FloatingPointCounter] = [:]
        var gauges: [String: CoreMetrics.Gauge] = [:]
        var http: [Int: CoreMetrics.Counter] = [:]
    }
    private let state = Mutex(State())

    public init(meters: [Meter], uplink: (@Sendable () -> UplinkFigures?)? = nil) {
        self.meters = meters
        self.uplink = uplink
        factory = PrometheusMetricsFactory(registry: registry)
    }

    /// One more HTTP reply with this status (called by the HTTP server for every reply it writes).
    public func countHTTP(status: Int) {
        let counter = state.withLock { s in
            if let c = s.http[status] { return c }
            let c = CoreMetrics.Counter(label: "meterext_http_requests_total", dimensions: [("status", String(status))],
                                        factory: factory)
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
                gauge(&s, "meterext_mqtt_connected", []).record(u.connected ? 1 : 0)
                gauge(&s, "meterext_mqtt_in_flight", []).record(u.inFlight)
                gauge(&s, "meterext_mqtt_backlog_intervals", []).record(u.backlog)
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
        gauge(&s, "meterext_meter_up", [m]).record(snap.health == .online ? 1 : 0)
        gauge(&s, "meterext_poll_cycle_seconds", [m]).record(Double(snap.cycleMicroseconds) / 1e6)
        for register in Register.allBasic {
            guard let v = snap.value(register) else { continue }
            let unit = register.unit.rawValue.isEmpty ? "1" : register.unit.rawValue
            gauge(&s, "meterext_meter_value", [m, ("quantity", Self.quantity(register)), ("unit", unit)]).record(Double(v))
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

    private func gauge(_ s: inout State, _ name: String, _ dims: [(String, String)]) -> CoreMetrics.Gauge {
        let k = key(name, dims)
        if let g = s.gauges[k] { return g }
        let g = CoreMetrics.Gauge(label: name, dimensions: dims, factory: factory)
        s.gauges[k] = g
        return g
    }

    /// Brings a counter up to a total kept elsewhere: only what goes beyond the highest total seen is added, so a
    /// value that dips and comes back (a glitch the plausibility check let through) is never counted twice. The
    /// exposed counter equals the meter's own total, also across service restarts (it starts at that total).
    private func total(_ s: inout State, _ name: String, _ dims: [(String, String)], _ value: Double) {
        let k = key(name, dims)
        let counter: CoreMetrics.FloatingPointCounter
        if let c = s.counters[k] { counter = c } else {
            counter = CoreMetrics.FloatingPointCounter(label: name, dimensions: dims, factory: factory)
            s.counters[k] = counter
        }
        let last = s.lastTotals[k] ?? 0
        if value > last {
            counter.increment(by: value - last)
            s.lastTotals[k] = value
        }
    }
}
