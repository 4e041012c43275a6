#if canImport(Glibc)
import Glibc
#endif
import MeterService
import NIOCore
import NIOHTTP1

/// A browser upload route: the page at `GET /ota` and `GET /ota.html`, the raw body of `POST /ota` (or
/// `/ota.html`) handed to `receive`. MeterHTTP knows nothing about firmware: the executable plugs the updater in.
///
/// ```swift
/// config.upload = UploadRoute(pageHTML: OTAPage.html) { bytes in
///     let result = await updater.installUploadedImage(bytes)
///     return (status: 200, text: OTAPage.replyText(for: result))
/// }
/// ```
public struct UploadRoute: Sendable {
    /// Served as `text/html; charset=utf-8`.
    public var pageHTML: String
    /// Larger uploads get 413 (plain text) and the connection is closed. The body is held in memory until
    /// `receive` runs, so this is also the memory bound of one upload.
    public var maxBodyBytes: Int
    /// Gets the whole body (any Content-Type: the body is the file). Runs off the event loop; its reply is
    /// sent as `text/plain; charset=utf-8`.
    public var receive: @Sendable ([UInt8]) async -> (status: Int, text: String)

    public static let defaultMaxBodyBytes = 64 * 1024 * 1024
    public static let paths: Set<String> = ["/ota", "/ota.html"]

    public init(pageHTML: String, maxBodyBytes: Int = UploadRoute.defaultMaxBodyBytes,
                receive: @escaping @Sendable ([UInt8]) async -> (status: Int, text: String)) {
        self.pageHTML = pageHTML
        self.maxBodyBytes = maxBodyBytes
        self.receive = receive
    }
}

/// A read-only `GET` path answered by a closure off the event loop (issue 15: `/history.csv`). `answer` gets the
/// query string (after `?`, undecoded) and returns the status, the Content-Type and the body.
public struct GetRoute: Sendable {
    public var answer: @Sendable (_ query: String) async -> (status: Int, contentType: String, body: [UInt8])
    public init(answer: @escaping @Sendable (_ query: String) async -> (status: Int, contentType: String, body: [UInt8])) {
        self.answer = answer
    }
}

/// Where a request comes from, from the socket's point of view.
public enum PeerAddress {
    /// 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104 (an IPv4 client on a dual-stack socket), and Unix sockets:
    /// all of them are the board itself.
    public static func isLoopback(_ address: SocketAddress) -> Bool {
        switch address {
        case .v4(let a):
            return UInt32(bigEndian: a.address.sin_addr.s_addr) >> 24 == 127
        case .v6(let a):
            let b = bytes(of: a.address.sin6_addr)
            if b[0..<15].allSatisfy({ $0 == 0 }) && b[15] == 1 { return true }
            return isV4Mapped(b) && b[12] == 127
        case .unixDomainSocket:
            return true
        }
    }

    /// Whether `address` is an IPv4 address (or its IPv4-mapped IPv6 form) in `network`/`prefixLength`, e.g.
    /// `isIPv4(peer, in: "10.42.0.0", prefixLength: 24)` for NetworkManager's shared access point.
    /// False for an unparsable `network`.
    public static func isIPv4(_ address: SocketAddress, in network: String, prefixLength: Int) -> Bool {
        guard (0...32).contains(prefixLength), let net = parseIPv4(network), let ip = ipv4(of: address) else {
            return false
        }
        let mask: UInt32 = prefixLength == 0 ? 0 : ~UInt32(0) << (32 - prefixLength)
        return ip & mask == net & mask
    }

    /// What one connection slot is counted against: the IPv4 address, an IPv6 /64 (one host's privacy
    /// addresses), or "local" for Unix sockets.
    static func limitKey(_ address: SocketAddress?) -> String {
        switch address {
        case .v4(let a):
            return "v4:\(UInt32(bigEndian: a.address.sin_addr.s_addr))"
        case .v6(let a):
            if let v4 = ipv4(of: .v6(a)) { return "v4:\(v4)" }
            return "v6:" + bytes(of: a.address.sin6_addr)[0..<8].map { String($0) }.joined(separator: ".")
        case .unixDomainSocket, nil:
            return "local"
        }
    }

    /// Whether `address` is exactly the IPv4 address `ip` (or its IPv4-mapped IPv6 form).
    public static func isIPv4(_ address: SocketAddress, equalTo ip: String) -> Bool {
        guard let want = parseIPv4(ip), let got = ipv4(of: address) else { return false }
        return want == got
    }

    static func ipv4(of address: SocketAddress) -> UInt32? {
        switch address {
        case .v4(let a):
            return UInt32(bigEndian: a.address.sin_addr.s_addr)
        case .v6(let a):
            let b = bytes(of: a.address.sin6_addr)
            guard isV4Mapped(b) else { return nil }
            return b[12...15].reduce(0) { $0 << 8 | UInt32($1) }
        case .unixDomainSocket:
            return nil
        }
    }

    static func parseIPv4(_ text: String) -> UInt32? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var value: UInt32 = 0
        for part in parts {
            guard part.count <= 3, let octet = UInt8(part) else { return nil }
            value = value << 8 | UInt32(octet)
        }
        return value
    }

    private static func bytes(of address: in6_addr) -> [UInt8] {
        withUnsafeBytes(of: address) { Array($0) }
    }

    private static func isV4Mapped(_ b: [UInt8]) -> Bool {
        b[0..<10].allSatisfy { $0 == 0 } && b[10] == 0xFF && b[11] == 0xFF
    }
}

/// What the HTTP layer needs to decide who may change the board.
struct AccessSettings: Sendable {
    var authorizer: CommandAuthorizer
    /// "This connection was accepted on the set-up access point's own address, and the access point is open."
    /// Given the connection's *local* address: trust follows the interface the request arrived on, never the
    /// client's source address (anyone on the LAN can pick a source in 10.42.0.0/24). Called on the event loop:
    /// must be cheap.
    var arrivedOnOpenSetupAccessPoint: @Sendable (SocketAddress) -> Bool
    var browser = BrowserPolicy()

    /// Loopback is trusted; no access point; no token matches.
    static let strict = AccessSettings(authorizer: CommandAuthorizer(tokenIsValid: { _ in false }),
                                       arrivedOnOpenSetupAccessPoint: { _ in false })

    func requestContext(peer: SocketAddress?, local: SocketAddress?, headers: HTTPHeaders) -> RequestContext {
        let trusted = peer.map { PeerAddress.isLoopback($0) } ?? false
        let onAP = !trusted && (local.map { arrivedOnOpenSetupAccessPoint($0) } ?? false)
        return RequestContext(peerIsTrusted: trusted, arrivedOnSetupAccessPoint: onAP,
                              bearerToken: Self.bearerToken(headers), browserRefusal: browser.refusal(headers))
    }

    /// The credentials of `Authorization: Bearer <token>` (scheme case-insensitive, RFC 6750); nil otherwise.
    static func bearerToken(_ headers: HTTPHeaders) -> String? {
        guard let value = headers.first(name: "authorization") else { return nil }
        let trimmed = value.drop(while: { $0 == " " || $0 == "\t" })
        guard trimmed.count > 7, trimmed.prefix(7).lowercased() == "bearer " else { return nil }
        var token = trimmed.dropFirst(7)
        while let c = token.first, c == " " || c == "\t" { token = token.dropFirst() }
        while let c = token.last, c == " " || c == "\t" { token = token.dropLast() }
        return token.isEmpty ? nil : String(token)
    }
}

extension APIErrorCode {
    /// A browser page from another site tried to change the board (CSRF).
    public static let crossOrigin = APIErrorCode("cross_origin", status: 403)
    /// A request that changes the board named a host that is not the board (DNS rebinding).
    public static let unknownHost = APIErrorCode("unknown_host", status: 403)
    /// Too many pipelined requests wait on one connection for their replies to be read.
    public static let busy = APIErrorCode("busy", status: 503)
}

/// Which browser requests may change the board: against cross-site requests (a page elsewhere POSTing to the
/// board: its `Origin` is not the board) and DNS rebinding (a page whose name was re-pointed at the board: its
/// `Host` is not the board's). Apps and curl send no `Origin` and use the board's address or name, so they are
/// never refused; reading commands ignore this entirely (reverse proxies may use any name).
public struct BrowserPolicy: Sendable {
    /// Names the board is reached under besides its hostname, `<hostname>.local` and `localhost` (config `host_names`).
    public var extraNames: [String]
    /// The system's hostname (asked per check: it may change at run time).
    public var hostName: @Sendable () -> String?

    public init(extraNames: [String] = [], hostName: @escaping @Sendable () -> String? = BrowserPolicy.systemHostName) {
        self.extraNames = extraNames
        self.hostName = hostName
    }

    public static let systemHostName: @Sendable () -> String? = {
        var name = [CChar](repeating: 0, count: 256)
        guard gethostname(&name, name.count - 1) == 0 else { return nil }
        return String(cString: name)
    }

    /// nil when the request may change the board as far as the browser rules go.
    func refusal(_ headers: HTTPHeaders) -> RequestContext.Refusal? {
        let host = headers.first(name: "host")
        if let host, !isBoard(host: host) {
            return RequestContext.Refusal(code: .unknownHost, message:
                "'\(Self.shown(host))' is not an address or name of this board: a request that changes the board must "
                + "use its IP address, its hostname, <hostname>.local or a name from host_names in its configuration "
                + "(refused to protect against DNS rebinding)")
        }
        if let origin = headers.first(name: "origin"), !isSameOrigin(origin, host: host) {
            return RequestContext.Refusal(code: .crossOrigin, message:
                "this request changes the board but was sent by a web page from '\(Self.shown(origin))', not by the "
                + "board's own page: refused (cross-site request). Apps and curl send no Origin header and are not affected")
        }
        return nil
    }

    private static func shown(_ text: String) -> String {
        String(text.unicodeScalars.filter { $0.value >= 0x20 && $0.value < 0x7F }.prefix(100).map(Character.init))
    }

    /// `host[:port]` (or `[v6]:port`) → the host (lowercased, no trailing dot) and the port; nil when malformed.
    static func split(_ authority: String) -> (host: String, port: String)? {
        var text = Substring(authority).drop(while: { $0 == " " || $0 == "\t" })
        while let last = text.last, last == " " || last == "\t" { text = text.dropLast() }
        let digits = { (s: Substring) in s.allSatisfy { ("0"..."9").contains($0) } }
        var port: Substring = ""
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            let rest = text[text.index(after: close)...]
            guard rest.isEmpty || (rest.first == ":" && digits(rest.dropFirst())) else { return nil }
            port = rest.dropFirst()
            text = text[...close]
        } else if let colon = text.lastIndex(of: ":") {
            port = text[text.index(after: colon)...]
            guard digits(port) else { return nil }
            text = text[..<colon]
        }
        while text.hasSuffix(".") { text = text.dropLast() }
        return text.isEmpty ? nil : (text.lowercased(), String(port))
    }

    static func hostPart(_ authority: String) -> String? { split(authority)?.host }

    static func isIPLiteral(_ host: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        if inet_pton(AF_INET, host, &v4) == 1 { return true }
        if host.hasPrefix("["), host.hasSuffix("]") {
            return inet_pton(AF_INET6, String(host.dropFirst().dropLast()), &v6) == 1
        }
        return false
    }

    func isBoard(host authority: String) -> Bool {
        guard let host = Self.hostPart(authority) else { return false }
        if Self.isIPLiteral(host) { return true }
        var names = ["localhost"] + extraNames.map { $0.lowercased() }
        if let name = hostName()?.lowercased(), !name.isEmpty {
            let short = name.split(separator: ".").first.map(String.init) ?? name
            names += [name, short, short + ".local", name + ".local"]
        }
        return names.contains(host)
    }

    /// The page that sent the request was served by the board under the name the request uses.
    func isSameOrigin(_ origin: String, host: String?) -> Bool {
        let parts = origin.split(separator: "://", maxSplits: 1, omittingEmptySubsequences: false)
        guard let host, parts.count == 2 else { return false }  // also "null"
        let defaultPort = parts[0].lowercased() == "https" ? "443" : "80"
        guard let page = Self.split(String(parts[1])), let target = Self.split(host) else {
            return false
        }
        return page.host == target.host
            && (page.port.isEmpty ? defaultPort : page.port) == (target.port.isEmpty ? defaultPort : target.port)
    }
}
