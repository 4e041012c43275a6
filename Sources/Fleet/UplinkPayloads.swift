import FoundationEssentials
import KPM33B

/// Topics of one board (issue 16): `<prefix>/<meterid>/reading|interval|status|availability`, the board's own
/// `<prefix>/<clientid>/availability` (retained, last will `offline`), relay commands on
/// `<prefix>/<meterid>/relay/set` (only with `--mqtt-commands`), discovery under `homeassistant/`.
public struct UplinkTopics: Sendable, Equatable {
    public var prefix: String
    public var clientID: String

    public init(prefix: String, clientID: String) {
        self.prefix = prefix
        self.clientID = clientID
    }

    public func reading(_ meterID: String) -> String { "\(prefix)/\(meterID)/reading" }
    public func interval(_ meterID: String) -> String { "\(prefix)/\(meterID)/interval" }
    public func status(_ meterID: String) -> String { "\(prefix)/\(meterID)/status" }
    public func availability(_ meterID: String) -> String { "\(prefix)/\(meterID)/availability" }
    public func relayCommand(_ meterID: String) -> String { "\(prefix)/\(meterID)/relay/set" }
    public func relayState(_ meterID: String) -> String { "\(prefix)/\(meterID)/relay" }
    /// The board's availability: the last will.
    public var board: String { "\(prefix)/\(clientID)/availability" }
    public static let haStatus = "homeassistant/status"

    /// A meter id or client id made safe as one topic level and as an HA object id.
    public static func level(_ s: String) -> String {
        String(s.map { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" ? $0 : "_" })
    }
}

/// A live quantity as HA and the `reading` topic see it: physical units (kWh, W, V, A, Hz).
public struct LiveQuantity: Sendable {
    public var key: String
    public var obis: String
    public var name: String
    public var deviceClass: String?
    public var stateClass: String
    public var unit: String?
    public var read: @Sendable (MeterSnapshot) -> Double?

    /// What the `reading` topic carries and HA discovery announces. Energy totals are `total_increasing` in kWh
    /// (the Energy dashboard takes them as they are); everything else is a `measurement`.
    public static let all: [LiveQuantity] = {
        func v(_ r: FloatRegister) -> @Sendable (MeterSnapshot) -> Double? { { s in s.value(r).map(Double.init) } }
        var rows: [LiveQuantity] = [
            LiveQuantity(key: "energy_import", obis: "1-0:1.8.0.255", name: "Energy import", deviceClass: "energy",
                         stateClass: "total_increasing", unit: "kWh", read: v(Register.forwardActiveEnergy)),
            LiveQuantity(key: "energy_export", obis: "1-0:2.8.0.255", name: "Energy export", deviceClass: "energy",
                         stateClass: "total_increasing", unit: "kWh", read: v(Register.reverseActiveEnergy)),
            LiveQuantity(key: "power", obis: "1-0:16.7.0.255", name: "Power", deviceClass: "power",
                         stateClass: "measurement", unit: "W", read: v(Register.activePowerTotal)),
            LiveQuantity(key: "power_import", obis: "1-0:1.7.0.255", name: "Power import", deviceClass: "power",
                         stateClass: "measurement", unit: "W",
                         read: { s in s.value(Register.activePowerTotal).map { Double(max($0, 0)) } }),
            LiveQuantity(key: "power_export", obis: "1-0:2.7.0.255", name: "Power export", deviceClass: "power",
                         stateClass: "measurement", unit: "W",
                         read: { s in s.value(Register.activePowerTotal).map { Double(max(-$0, 0)) } }),
            LiveQuantity(key: "frequency", obis: "1-0:14.7.0.255", name: "Frequency", deviceClass: "frequency",
                         stateClass: "measurement", unit: "Hz", read: v(Register.frequency)),
            LiveQuantity(key: "power_factor", obis: "1-0:13.7.0.255", name: "Power factor", deviceClass: "power_factor",
                         stateClass: "measurement", unit: nil, read: v(Register.powerFactorTotal)),
        ]
        let phases: [(String, Int, FloatRegister, FloatRegister)] = [
            ("L1", 20, Register.voltageA, Register.currentA),
            ("L2", 40, Register.voltageB, Register.currentB),
            ("L3", 60, Register.voltageC, Register.currentC),
        ]
        for (p, c, volt, amp) in phases {
            rows.append(LiveQuantity(key: "voltage_\(p.lowercased())", obis: "1-0:\(c + 12).7.0.255", name: "Voltage \(p)",
                                     deviceClass: "voltage", stateClass: "measurement", unit: "V", read: v(volt)))
            rows.append(LiveQuantity(key: "current_\(p.lowercased())", obis: "1-0:\(c + 11).7.0.255", name: "Current \(p)",
                                     deviceClass: "current", stateClass: "measurement", unit: "A", read: v(amp)))
        }
        return rows
    }()

    /// Energy totals must never go out partial (HA would record a spike): a reading without them is not sent.
    public static let required: Set<String> = ["energy_import", "energy_export"]
}

/// JSON bodies of the uplink's messages.
public enum UplinkPayloads {
    static func encode<T: Encodable>(_ value: T) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? Array(encoder.encode(value))) ?? Array("{}".utf8)
    }

    /// Shortest decimal for a float read off the meter (49.98, not 49.979999542236328).
    static func tidy(_ v: Double) -> Double { (v * 1000).rounded() / 1000 }

    struct Reading: Encodable {
        var meter: String
        var ts: Int64
        var values: [String: Double]
    }

    /// `reading`: `{"meter","ts","values":{"1-0:1.8.0.255":kWh,…}}`; nil while the energy totals are not known.
    public static func reading(meterID: String, snapshot: MeterSnapshot) -> [UInt8]? {
        var values: [String: Double] = [:]
        for q in LiveQuantity.all {
            if let v = q.read(snapshot) { values[q.obis] = tidy(v) }
        }
        let required = LiveQuantity.all.filter { LiveQuantity.required.contains($0.key) }.map(\.obis)
        guard required.allSatisfy({ values[$0] != nil }) else { return nil }
        let ts = snapshot.readTime(.basic) ?? snapshot.publishedAt
        return encode(Reading(meter: meterID, ts: ts, values: values))
    }

    struct Interval: Encodable {
        var meter: String
        var seq: Int64
        var start: Int64
        var ts: Int64
        var values: [String: Double]
    }

    /// `interval`: `{"meter","seq","start","ts"(= interval end),"values":{OBIS: value}}` in physical units, to
    /// three decimals (1 Wh, 1 mW, 1 mV: finer than the meter's float32 registers at real totals).
    public static func interval(meterID: String, _ interval: UplinkInterval) -> [UInt8] {
        var values: [String: Double] = [:]
        for v in interval.values { values[v.obis] = tidy(v.value) }
        return encode(Interval(meter: meterID, seq: interval.seq, start: interval.start, ts: interval.end, values: values))
    }

    struct Status: Encodable {
        var meter: String
        var link: String
        var ami: Int?
        var ts: Int64
    }

    /// `status`: the meter link (`online`, `stale`, `offline`, `starting`) and the AMI status code.
    public static func status(meterID: String, link: String, ami: Int?, ts: Int64) -> [UInt8] {
        encode(Status(meter: meterID, link: link, ami: ami, ts: ts))
    }

    // MARK: Home Assistant discovery

    struct Availability: Encodable { var topic: String }
    struct Device: Encodable {
        var identifiers: [String]
        var name: String
        var manufacturer = "Compere"
        var model = "KPM33B"
        var serialNumber: String
        var swVersion: String
        enum CodingKeys: String, CodingKey {
            case identifiers, name, manufacturer, model, serialNumber = "serial_number", swVersion = "sw_version"
        }
    }

    struct SensorConfig: Encodable {
        var name: String
        var uniqueID: String
        var objectID: String
        var stateTopic: String
        var valueTemplate: String
        var deviceClass: String?
        var stateClass: String
        var unit: String?
        var availability: [Availability]
        var availabilityMode = "all"
        var expireAfter: Int
        var device: Device
        enum CodingKeys: String, CodingKey {
            case name, uniqueID = "unique_id", objectID = "object_id", stateTopic = "state_topic"
            case valueTemplate = "value_template", deviceClass = "device_class", stateClass = "state_class"
            case unit = "unit_of_measurement", availability, availabilityMode = "availability_mode"
            case expireAfter = "expire_after", device
        }
    }

    struct SwitchConfig: Encodable {
        var name: String
        var uniqueID: String
        var objectID: String
        var commandTopic: String
        var stateTopic: String
        var payloadOn = "ON"
        var payloadOff = "OFF"
        var availability: [Availability]
        var availabilityMode = "all"
        var device: Device
        enum CodingKeys: String, CodingKey {
            case name, uniqueID = "unique_id", objectID = "object_id", commandTopic = "command_topic"
            case stateTopic = "state_topic", payloadOn = "payload_on", payloadOff = "payload_off", availability
            case availabilityMode = "availability_mode", device
        }
    }

    /// Retained discovery configs for one meter (one HA device): `(topic, payload)`. With `commands` off the relay
    /// switch's config topic gets an empty payload, which removes an entity announced by an earlier run.
    public static func discovery(meterID: String, topics: UplinkTopics, liveInterval: Double, commands: Bool,
                                 softwareVersion: String) -> [(topic: String, payload: [UInt8])] {
        let node = "meterext_" + UplinkTopics.level(meterID)
        let device = Device(identifiers: [node], name: "KPM33B \(meterID)", serialNumber: meterID, swVersion: softwareVersion)
        let availability = [Availability(topic: topics.board), Availability(topic: topics.availability(meterID))]
        var out: [(String, [UInt8])] = []
        for q in LiveQuantity.all {
            let config = SensorConfig(
                name: q.name, uniqueID: "\(node)_\(q.key)", objectID: "\(node)_\(q.key)",
                stateTopic: topics.reading(meterID), valueTemplate: "{{ value_json.values['\(q.obis)'] }}",
                deviceClass: q.deviceClass, stateClass: q.stateClass, unit: q.unit, availability: availability,
                expireAfter: max(30, Int((3 * liveInterval).rounded(.up))), device: device)
            out.append(("homeassistant/sensor/\(node)/\(q.key)/config", encode(config)))
        }
        let switchTopic = "homeassistant/switch/\(node)/relay/config"
        if commands {
            let config = SwitchConfig(name: "Relay", uniqueID: "\(node)_relay", objectID: "\(node)_relay",
                                      commandTopic: topics.relayCommand(meterID), stateTopic: topics.relayState(meterID),
                                      availability: availability, device: device)
            out.append((switchTopic, encode(config)))
        } else {
            out.append((switchTopic, []))
        }
        return out
    }
}
