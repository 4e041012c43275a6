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
    /// "This peer is on the set-up access point while it is open." Called on the event loop: must be cheap.
    var isOnOpenSetupAccessPoint: @Sendable (SocketAddress) -> Bool

    /// Loopback is trusted; no access point; no token matches.
    static let strict = AccessSettings(authorizer: CommandAuthorizer(tokenIsValid: { _ in false }),
                                       isOnOpenSetupAccessPoint: { _ in false })

    func requestContext(peer: SocketAddress?, headers: HTTPHeaders) -> RequestContext {
        let trusted = peer.map { PeerAddress.isLoopback($0) || isOnOpenSetupAccessPoint($0) } ?? false
        return RequestContext(peerIsTrusted: trusted, bearerToken: Self.bearerToken(headers))
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
