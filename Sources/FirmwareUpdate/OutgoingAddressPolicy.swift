import Glibc

/// An IPv4 or IPv6 address as the kernel would connect to it.
public enum IPAddress: Hashable, Sendable, CustomStringConvertible {
    case v4(UInt32) // host byte order
    case v6([UInt8]) // 16 bytes

    /// From the address bytes of a `sockaddr_in`/`sockaddr_in6` (network order); nil for other families.
    init?(family: Int32, bytes: UnsafeRawPointer) {
        switch family {
        case AF_INET:
            let b = bytes.assumingMemoryBound(to: UInt8.self)
            self = .v4(UInt32(b[0]) << 24 | UInt32(b[1]) << 16 | UInt32(b[2]) << 8 | UInt32(b[3]))
        case AF_INET6:
            self = .v6(Array(UnsafeBufferPointer(start: bytes.assumingMemoryBound(to: UInt8.self), count: 16)))
        default:
            return nil
        }
    }

    /// "a.b.c.d" or an IPv6 literal (inet_pton); nil otherwise.
    public init?(_ text: String) {
        var v4 = in_addr(), v6 = in6_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            guard let a = withUnsafeBytes(of: &v4, { IPAddress(family: AF_INET, bytes: $0.baseAddress!) }) else { return nil }
            self = a
        } else if inet_pton(AF_INET6, text, &v6) == 1 {
            guard let a = withUnsafeBytes(of: &v6, { IPAddress(family: AF_INET6, bytes: $0.baseAddress!) }) else { return nil }
            self = a
        } else {
            return nil
        }
    }

    /// The IPv4 address inside an IPv4-mapped (::ffff:a.b.c.d) or IPv4-compatible (::a.b.c.d) IPv6 address.
    var embeddedIPv4: UInt32? {
        guard case .v6(let b) = self, b[0..<10].allSatisfy({ $0 == 0 }),
              (b[10] == 0xFF && b[11] == 0xFF) || (b[10] == 0 && b[11] == 0) else { return nil }
        let v4 = UInt32(b[12]) << 24 | UInt32(b[13]) << 16 | UInt32(b[14]) << 8 | UInt32(b[15])
        // ::0.0.0.1 is ::1 (loopback) and :: itself, both handled as IPv6.
        return b[10] == 0 && v4 <= 1 ? nil : v4
    }

    public var description: String {
        switch self {
        case .v4(let a): return "\(a >> 24).\(a >> 16 & 0xFF).\(a >> 8 & 0xFF).\(a & 0xFF)"
        case .v6(var b):
            var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
            return inet_ntop(AF_INET6, &b, &text, socklen_t(text.count)) != nil ? String(cString: text) : "?"
        }
    }

    /// Every address configured on this machine's interfaces (getifaddrs), read fresh on each call.
    public static func ownAddresses() -> Set<IPAddress> {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0 else { return [] }
        defer { freeifaddrs(list) }
        var out = Set<IPAddress>()
        var cursor = list
        while let entry = cursor {
            defer { cursor = entry.pointee.ifa_next }
            guard let sa = entry.pointee.ifa_addr else { continue }
            let family = Int32(sa.pointee.sa_family)
            let raw = UnsafeRawPointer(sa)
            let offset = family == AF_INET ? MemoryLayout<sockaddr_in>.offset(of: \.sin_addr)!
                : MemoryLayout<sockaddr_in6>.offset(of: \.sin6_addr)!
            if family == AF_INET || family == AF_INET6, let a = IPAddress(family: family, bytes: raw + offset) {
                out.insert(a)
            }
        }
        return out
    }
}

/// Where `request_post`, `download_file` and firmware downloads may connect. The check runs on every address libcurl
/// is about to connect to (after DNS, for every redirect hop), before the socket exists, so a name that resolves to
/// loopback, a redirect to 169.254.169.254 or a rebinding DNS answer never gets a packet out.
///
/// Refused: loopback (127.0.0.0/8, ::1; loopback peers are trusted by the API), link-local (169.254.0.0/16,
/// fe80::/10: cloud metadata services, neighbours' set-up pages), unspecified (0.0.0.0/8, ::, which Linux connects
/// to loopback), multicast and broadcast, IPv4 addresses inside IPv6 (::ffff:127.0.0.1) by the IPv4 rules, and every
/// address of the board's own interfaces. LAN addresses (10/8, 172.16/12, 192.168/16, fc00::/7) stay allowed: the
/// interface description's own examples post to a LAN server.
public struct OutgoingAddressPolicy: Sendable, Equatable {
    public var refuseLocal: Bool

    public static let board = OutgoingAddressPolicy(refuseLocal: true)
    /// Tests of the transfer code with servers on 127.0.0.1, and `--allow-local-addresses` on the board's CLI.
    public static let unrestricted = OutgoingAddressPolicy(refuseLocal: false)

    public init(refuseLocal: Bool) { self.refuseLocal = refuseLocal }

    /// Nil when a connection to `address` is allowed; otherwise why not, in words.
    public func refusal(for address: IPAddress,
                        ownAddresses: () -> Set<IPAddress> = IPAddress.ownAddresses) -> String? {
        guard refuseLocal else { return nil }
        if let reason = Self.reservedReason(address) { return reason }
        if ownAddresses().contains(address) { return "one of the board's own addresses" }
        if let v4 = address.embeddedIPv4, ownAddresses().contains(.v4(v4)) { return "one of the board's own addresses" }
        return nil
    }

    static func reservedReason(_ address: IPAddress) -> String? {
        if let v4 = address.embeddedIPv4 { return reservedReason(.v4(v4)) }
        switch address {
        case .v4(let a):
            switch a >> 24 {
            case 0: return "an unspecified address (0.0.0.0/8)"
            case 127: return "a loopback address"
            case 224...239: return "a multicast address"
            case 240...255: return "a reserved or broadcast address"
            default: break
            }
            if a >> 16 == 0xA9FE { return "a link-local address (169.254.0.0/16)" }
            return nil
        case .v6(let b):
            if b.allSatisfy({ $0 == 0 }) { return "the unspecified address (::)" }
            if b[0..<15].allSatisfy({ $0 == 0 }) && b[15] == 1 { return "a loopback address" }
            if b[0] == 0xFE && b[1] & 0xC0 == 0x80 { return "a link-local address (fe80::/10)" }
            if b[0] == 0xFF { return "a multicast address" }
            return nil
        }
    }
}
