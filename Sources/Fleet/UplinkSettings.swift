/// `--mqtt mqtt[s]://[user[:password]@]host[:port]` (issue 16). The password is kept out of every description:
/// `redacted` is what logs and `system_status` show.
public struct BrokerURL: Sendable, Equatable {
    public var tls: Bool
    public var host: String
    public var port: Int
    public var username: String?
    public var password: String?

    public struct ParseError: Error, CustomStringConvertible, Equatable {
        public var message: String
        public var description: String { message }
    }

    public init(tls: Bool, host: String, port: Int, username: String? = nil, password: String? = nil) {
        self.tls = tls
        self.host = host
        self.port = port
        self.username = username
        self.password = password
    }

    /// `mqtt://host`, `mqtts://user:pw@host:8883`, `mqtt://[::1]:1883`. User and password are percent-decoded
    /// (a password may hold `@` or `:` as `%40`, `%3A`). Errors never repeat the password.
    public init(parsing text: String) throws(ParseError) {
        let scheme: Bool
        var rest: Substring
        if text.hasPrefix("mqtt://") {
            scheme = false; rest = text.dropFirst(7)
        } else if text.hasPrefix("mqtts://") {
            scheme = true; rest = text.dropFirst(8)
        } else {
            throw ParseError(message: "--mqtt must start with mqtt:// or mqtts:// (e.g. mqtts://user:password@broker.example:8883)")
        }
        if rest.hasSuffix("/") { rest = rest.dropLast() }
        var user: String?, pass: String?
        if let at = rest.lastIndex(of: "@") {
            let credentials = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = credentials.firstIndex(of: ":") {
                user = try Self.percentDecoded(credentials[..<colon], what: "user name")
                pass = try Self.percentDecoded(credentials[credentials.index(after: colon)...], what: "password")
            } else {
                user = try Self.percentDecoded(credentials, what: "user name")
            }
            if user?.isEmpty == true { throw ParseError(message: "--mqtt: the user name before '@' is empty") }
        }
        guard !rest.contains("/") else {
            throw ParseError(message: "--mqtt takes no path: mqtt[s]://[user[:password]@]host[:port]")
        }
        var host: Substring, portText: Substring?
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { throw ParseError(message: "--mqtt: unclosed '[' in the host") }
            host = rest[rest.index(after: rest.startIndex)..<close]
            let after = rest[rest.index(after: close)...]
            if after.hasPrefix(":") { portText = after.dropFirst() } else if !after.isEmpty {
                throw ParseError(message: "--mqtt: unexpected text after the IPv6 address")
            }
        } else if let colon = rest.lastIndex(of: ":") {
            host = rest[..<colon]
            portText = rest[rest.index(after: colon)...]
        } else {
            host = rest
        }
        guard !host.isEmpty else { throw ParseError(message: "--mqtt: the broker's host name is missing") }
        var port = scheme ? 8883 : 1883
        if let portText {
            guard let p = Int(portText), (1...65535).contains(p) else {
                throw ParseError(message: "--mqtt: the port must be 1-65535")
            }
            port = p
        }
        self.init(tls: scheme, host: String(host), port: port, username: user, password: pass)
    }

    /// Never holds the password: `mqtts://user:***@host:8883`.
    public var redacted: String {
        let h = host.contains(":") ? "[\(host)]" : host
        let who = username.map { $0 + (password == nil ? "" : ":***") + "@" } ?? ""
        return "\(tls ? "mqtts" : "mqtt")://\(who)\(h):\(port)"
    }

    static func percentDecoded(_ s: Substring, what: String) throws(ParseError) -> String {
        var out: [UInt8] = []
        var bytes = Array(s.utf8)[...]
        while let b = bytes.popFirst() {
            if b == UInt8(ascii: "%") {
                guard bytes.count >= 2, let v = UInt8(String(decoding: bytes.prefix(2), as: UTF8.self), radix: 16) else {
                    throw ParseError(message: "--mqtt: bad percent escape in the \(what)")
                }
                out.append(v)
                bytes = bytes.dropFirst(2)
            } else {
                out.append(b)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// Everything the uplink is configured with (`--mqtt…` flags and the `mqtt…` keys of meterext.json).
public struct UplinkSettings: Sendable, Equatable {
    public var broker: BrokerURL
    /// Topic prefix (`--mqtt-prefix`, default `meterext`): no wildcards, no empty levels, no leading `$`.
    public var prefix: String = "meterext"
    /// Seconds between live `reading` messages (QoS 0, never queued).
    public var liveInterval: Double = 10
    /// `--mqtt-commands`: the relay switch in HA and the `<prefix>/<meterid>/relay/set` topic.
    public var commands = false
    public var caFile: String?
    public var certFile: String?
    public var keyFile: String?
    /// MQTT client id; must differ between boards on one broker.
    public var clientID: String = "meterext"

    public init(broker: BrokerURL) { self.broker = broker }

    /// Refuses what would make topics ambiguous or subscribe to more than asked: `+`, `#`, empty levels, `$`.
    public static func validatePrefix(_ prefix: String) throws(BrokerURL.ParseError) {
        if prefix.isEmpty { throw .init(message: "--mqtt-prefix must not be empty") }
        if prefix.contains("+") || prefix.contains("#") {
            throw .init(message: "--mqtt-prefix must not contain the MQTT wildcards '+' or '#' (got '\(prefix)')")
        }
        if prefix.hasPrefix("$") { throw .init(message: "--mqtt-prefix must not start with '$' (reserved by brokers)") }
        if prefix.hasPrefix("/") || prefix.hasSuffix("/") || prefix.contains("//") {
            throw .init(message: "--mqtt-prefix must not have empty topic levels (a leading, trailing or double '/')")
        }
        if prefix.utf8.contains(0) || prefix.utf8.count > 200 {
            throw .init(message: "--mqtt-prefix must be at most 200 bytes without NUL")
        }
    }
}
