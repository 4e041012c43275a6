import FoundationEssentials
import KPM33B
import XCTest
@testable import Fleet
@testable import GatewayMetrics

final class PayloadAndSettingsTests: XCTestCase {
    func json(_ bytes: [UInt8]) throws -> [String: Any] {
        // FoundationEssentials has no JSONSerialization: decode into a tolerant tree.
        try XCTUnwrap(try JSONDecoder().decode(AnyJSON.self, from: Data(bytes)).value as? [String: Any])
    }

    // MARK: --mqtt

    func testBrokerURLParsingAndRedaction() throws {
        let a = try BrokerURL(parsing: "mqtts://fleet:s3cr%40t@broker.example:8884")
        XCTAssertEqual(a, BrokerURL(tls: true, host: "broker.example", port: 8884, username: "fleet", password: "s3cr@t"))
        XCTAssertEqual(a.redacted, "mqtts://fleet:***@broker.example:8884")
        XCTAssertFalse(a.redacted.contains("s3cr"))
        XCTAssertEqual(try BrokerURL(parsing: "mqtt://10.0.0.2").port, 1883)
        XCTAssertEqual(try BrokerURL(parsing: "mqtts://h").port, 8883)
        XCTAssertEqual(try BrokerURL(parsing: "mqtt://[::1]:1884").host, "::1")
        XCTAssertEqual(try BrokerURL(parsing: "mqtt://[::1]:1884").redacted, "mqtt://[::1]:1884")
        for bad in ["http://h", "mqtt://", "mqtt://h:0", "mqtt://h:99999", "mqtt://h/topic", "mqtt://:pw@h"] {
            XCTAssertThrowsError(try BrokerURL(parsing: bad), bad)
        }
        // An error never repeats the password.
        do {
            _ = try BrokerURL(parsing: "mqtt://u:topsecret@h:notaport")
            XCTFail("accepted")
        } catch {
            XCTAssertFalse("\(error)".contains("topsecret"))
        }
    }

    func testPrefixRejectsWildcardsAndEmptyLevels() {
        for good in ["meterext", "site-7/meters", "a_b"] { XCTAssertNoThrow(try UplinkSettings.validatePrefix(good)) }
        for bad in ["", "a/+/b", "#", "meters/#", "$SYS", "/a", "a/", "a//b"] {
            XCTAssertThrowsError(try UplinkSettings.validatePrefix(bad), bad)
        }
    }

    // MARK: payloads

    func snapshot() -> MeterSnapshot {
        var s = MeterSnapshot()
        s.health = .online
        s.basic = Array(repeating: 0, count: 26)
        s.energy = Array(repeating: 0, count: 26)
        s.basic![0] = 231.5        // voltage A
        s.basic![12] = -1745.25    // total active power (exporting)
        s.basic![25] = 49.98       // frequency
        s.energy![13] = 2810.875    // forward active energy
        s.energy![14] = 222.5       // reverse active energy
        s.readAt[RegisterGroup.basic.rawValue] = 1_722_007_035
        s.readAt[RegisterGroup.energy.rawValue] = 1_722_007_035
        return s
    }

    func testReadingCarriesPhysicalUnitsAndNeverAPartialTotal() throws {
        let body = try XCTUnwrap(UplinkPayloads.reading(meterID: "33B1", snapshot: snapshot()))
        let j = try json(body)
        let values = try XCTUnwrap(j["values"] as? [String: Any])
        XCTAssertEqual(values["1-0:1.8.0.255"] as? Double, 2810.875)
        XCTAssertEqual(values["1-0:2.8.0.255"] as? Double, 222.5)
        XCTAssertEqual(values["1-0:16.7.0.255"] as? Double, -1745.25)
        XCTAssertEqual(values["1-0:2.7.0.255"] as? Double, 1745.25)
        XCTAssertEqual(values["1-0:1.7.0.255"] as? Double, 0)
        XCTAssertEqual(values["1-0:14.7.0.255"] as? Double, 49.98)
        XCTAssertEqual(j["ts"] as? Double, 1_722_007_035)
        var partial = snapshot()
        partial.energy = nil
        XCTAssertNil(UplinkPayloads.reading(meterID: "33B1", snapshot: partial), "no reading without the energy totals")
    }

    func testIntervalPayload() throws {
        let body = UplinkPayloads.interval(meterID: "33B1", UplinkInterval(
            seq: 42, start: 900, end: 1800, values: [.init(obis: "1-0:1.8.0.255", value: 12.5),
                                                     .init(obis: "1-0:32.5.0.255", value: Double(Float(229.9745)))]))
        let j = try json(body)
        XCTAssertEqual(j["seq"] as? Double, 42)
        XCTAssertEqual(j["ts"] as? Double, 1800)
        XCTAssertEqual(j["start"] as? Double, 900)
        XCTAssertEqual((j["values"] as? [String: Any])?["1-0:1.8.0.255"] as? Double, 12.5)
        XCTAssertEqual((j["values"] as? [String: Any])?["1-0:32.5.0.255"] as? Double, 229.975, "a float register, not 229.97450256347656")
    }

    /// Keys HA's MQTT sensor and switch platforms require or need for a device and the Energy dashboard.
    func testDiscoveryHasTheKeysHomeAssistantNeeds() throws {
        let topics = UplinkTopics(prefix: "meterext", clientID: "meterext-board1")
        let configs = UplinkPayloads.discovery(meterID: "33B0000126001", topics: topics, liveInterval: 10,
                                               commands: false, softwareVersion: "1.2.3")
        var devices = Set<String>()
        for (topic, payload) in configs {
            XCTAssertTrue(topic.hasPrefix("homeassistant/"), topic)
            XCTAssertTrue(topic.hasSuffix("/config"), topic)
            if topic.contains("/switch/") {
                XCTAssertEqual(payload, [], "no relay switch without --mqtt-commands (an empty config removes it)")
                continue
            }
            let j = try json(payload)
            for key in ["name", "unique_id", "state_topic", "value_template", "availability", "device", "state_class"] {
                XCTAssertNotNil(j[key], "\(topic) lacks \(key)")
            }
            XCTAssertEqual(j["state_topic"] as? String, "meterext/33B0000126001/reading")
            let availability = try XCTUnwrap(j["availability"] as? [Any])
            XCTAssertEqual(availability.count, 2)
            XCTAssertEqual(j["availability_mode"] as? String, "all")
            let device = try XCTUnwrap(j["device"] as? [String: Any])
            devices.insert("\(device["identifiers"]!)")
            if topic.contains("energy_import") || topic.contains("energy_export") {
                XCTAssertEqual(j["device_class"] as? String, "energy")
                XCTAssertEqual(j["state_class"] as? String, "total_increasing")
                XCTAssertEqual(j["unit_of_measurement"] as? String, "kWh")
            } else {
                XCTAssertEqual(j["state_class"] as? String, "measurement", topic)
            }
        }
        XCTAssertEqual(devices.count, 1, "one HA device per meter")
        let withCommands = UplinkPayloads.discovery(meterID: "33B0000126001", topics: topics, liveInterval: 10,
                                                    commands: true, softwareVersion: "1.2.3")
        let relay = try XCTUnwrap(withCommands.first { $0.topic.contains("/switch/") })
        let j = try json(relay.payload)
        XCTAssertEqual(j["command_topic"] as? String, "meterext/33B0000126001/relay/set")
    }

    // MARK: cursor file

    func testCursorFileRoundTripsAndReplacesAtomically() throws {
        let dir = "/tmp/fleet-cursor-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try? FileManagerShim.makeDirectory(dir)
        let file = CursorFile(stateDirectory: dir)
        defer {
            unlink(file.path)
            rmdir(dir)
        }
        XCTAssertEqual(try file.load(), [:])
        try file.save([1: 42, 7: 3])
        XCTAssertEqual(try file.load(), [1: 42, 7: 3])
        try file.save([1: 43])
        XCTAssertEqual(try file.load(), [1: 43])
    }

    // MARK: /metrics

    final class FixedLink: MeterLink, @unchecked Sendable {
        var snap: MeterSnapshot
        init(_ s: MeterSnapshot) { snap = s }
        func snapshot() -> MeterSnapshot { snap }
        func setRelay(closed: Bool) async throws -> RelayState { RelayState(bits: closed ? 7 : 0) }
        var lineDescription: String { "test" }
    }

    func testMetricsTextHasMeterValuesCountersAndHTTPStatuses() {
        var s = snapshot()
        s.counters.transactions = 10
        s.counters.timeouts = 2
        let link = FixedLink(s)
        let metrics = GatewayMetrics(meters: [.init(address: 1, link: link)], uplink: {
            .init(connected: true, inFlight: 3, backlog: 120, published: 50, acknowledged: 47, connects: 1)
        })
        metrics.countHTTP(status: 200)
        metrics.countHTTP(status: 200)
        metrics.countHTTP(status: 404)
        var text = String(decoding: metrics.render(), as: UTF8.self)
        XCTAssertTrue(text.contains(#"meterext_http_requests_total{status="200"} 2"#), text)
        XCTAssertTrue(text.contains(#"meterext_http_requests_total{status="404"} 1"#), text)
        XCTAssertTrue(text.contains(#"meterext_meter_value{meter="1",quantity="phase_a_voltage",unit="V"} 231.5"#), text)
        XCTAssertTrue(text.contains(#"meterext_energy_kwh_total{meter="1",quantity="forward_import_active_energy"} 2810.875"#), text)
        XCTAssertTrue(text.contains("meterext_mqtt_in_flight 3"), text)
        XCTAssertTrue(text.contains("meterext_mqtt_backlog_intervals 120"), text)
        // Totals kept by the link become counter increments.
        link.snap.counters.timeouts = 5
        text = String(decoding: metrics.render(), as: UTF8.self)
        XCTAssertTrue(text.contains(#"meterext_link_results_total{meter="1",result="timeout"} 5"#), text)
        // An energy total that dips and comes back is not counted twice.
        link.snap.energy![13] = 2800
        _ = metrics.render()
        link.snap.energy![13] = 2811
        text = String(decoding: metrics.render(), as: UTF8.self)
        XCTAssertTrue(text.contains(#"meterext_energy_kwh_total{meter="1",quantity="forward_import_active_energy"} 2811.0"#), text)
    }

    /// Every family exposed has one `# HELP` line with its text and one `# TYPE` line (fleet operators read them in
    /// Prometheus and Grafana).
    func testEveryMetricFamilyHasHelpAndType() {
        var s = snapshot()
        s.counters.transactions = 10
        let metrics = GatewayMetrics(meters: [.init(address: 1, link: FixedLink(s))], uplink: {
            .init(connected: false, inFlight: 0, backlog: 0, published: 0, acknowledged: 0, connects: 0)
        })
        metrics.countHTTP(status: 200)
        let lines = String(decoding: metrics.render(), as: UTF8.self).split(separator: "\n")
        var families = Set<String>()
        for line in lines where !line.hasPrefix("#") {
            families.insert(String(line.prefix { $0 != "{" && $0 != " " }))
        }
        XCTAssertEqual(families, Set(GatewayMetrics.help.keys))
        for family in families {
            let help = lines.filter { $0.hasPrefix("# HELP \(family) ") }
            XCTAssertEqual(help, ["# HELP \(family) \(GatewayMetrics.help[family]!)"], family)
            XCTAssertEqual(lines.filter { $0.hasPrefix("# TYPE \(family) ") }.count, 1, family)
        }
    }
}

/// Directory creation without Foundation's FileManager.
enum FileManagerShim {
    static func makeDirectory(_ path: String) throws { _ = mkdir(path, 0o700) }
}

/// A JSON tree for assertions (FoundationEssentials lacks JSONSerialization).
struct AnyJSON: Decodable {
    let value: Any
    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { value = NSNullShim() }
        else if let b = try? c.decode(Bool.self) { value = b }
        else if let d = try? c.decode(Double.self) { value = d }
        else if let s = try? c.decode(String.self) { value = s }
        else if let a = try? c.decode([AnyJSON].self) { value = a.map(\.value) }
        else { value = try c.decode([String: AnyJSON].self).mapValues(\.value) }
    }
}
struct NSNullShim {}
