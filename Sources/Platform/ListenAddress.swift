/// `host:port` as `--listen`, `--api` and the config file's `listen` take it (`0.0.0.0:80`, `127.0.0.1:8080`,
/// `[::]:80`, `[::1]:8080`): the one parser for it.
///
/// An IPv6 host must be bracketed (else its colons are ambiguous). Port 0 (the kernel picks one) only where the
/// caller allows it: tests bind that way, a config file must name a real port.
public struct ListenAddress: Sendable, Hashable, CustomStringConvertible, Decodable {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public init(parsing text: String, allowingAnyPort: Bool = false) throws(ListenAddressError) {
        let hostPart: Substring
        let portPart: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else {
                throw ListenAddressError(text: text)
            }
            hostPart = text[text.index(after: text.startIndex)..<close]
            portPart = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":"), !text[..<colon].contains(":") else {
                throw ListenAddressError(text: text)
            }
            hostPart = text[..<colon]
            portPart = text[text.index(after: colon)...]
        }
        guard !hostPart.isEmpty, let port = Int(portPart), ((allowingAnyPort ? 0 : 1)...65535).contains(port) else {
            throw ListenAddressError(text: text)
        }
        self.init(host: String(hostPart), port: port)
    }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        do { self = try ListenAddress(parsing: text) } catch {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: error.description))
        }
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

public struct ListenAddressError: Error, CustomStringConvertible, Equatable {
    public let text: String
    public var description: String { "invalid listen address '\(text)' (expected HOST:PORT, e.g. 0.0.0.0:80 or [::]:80)" }
}
