import MeterService
import Platform
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// `get_ip_info` and `mac` from the running system: the interface with the default route
/// (`/proc/net/route`), its IPv4 address and netmask (`getifaddrs`) and its MAC (`/sys/class/net/<if>/address`).
public struct LinuxNetworkInfo: NetworkInfo {
    public var routeTable: String
    public var sysClassNet: String

    public init(routeTable: String = "/proc/net/route", sysClassNet: String = "/sys/class/net") {
        self.routeTable = routeTable
        self.sysClassNet = sysClassNet
    }

    public struct DefaultRoute: Sendable, Equatable {
        public var interface: String
        /// Dotted quad.
        public var gateway: String
    }

    /// The default route with the lowest metric in `/proc/net/route` text (hex fields in host byte order).
    public static func parseDefaultRoute(_ text: String) -> DefaultRoute? {
        var best: (route: DefaultRoute, metric: Int)? = nil
        for line in text.split(separator: "\n").dropFirst() {
            let f = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard f.count >= 8, f[1] == "00000000", f[7] == "00000000",
                  let gw = UInt32(f[2], radix: 16), let flags = UInt32(f[3], radix: 16),
                  flags & 0x1 != 0,  // RTF_UP
                  let metric = Int(f[6]) else { continue }
            // /proc/net/route prints the in-memory (network order) word as a host-order number: its bytes are the address.
            let bytes = withUnsafeBytes(of: gw) { Array($0) }
            let route = DefaultRoute(interface: String(f[0]), gateway: bytes.map(String.init).joined(separator: "."))
            if best == nil || metric < best!.metric { best = (route, metric) }
        }
        return best?.route
    }

    public struct InterfaceAddress: Sendable, Equatable {
        public var interface: String
        public var address: String
        public var netmask: String
    }

    /// IPv4 addresses of all interfaces that are up.
    public static func ipv4Addresses() -> [InterfaceAddress] {
        var head: UnsafeMutablePointer<ifaddrs>? = nil
        guard getifaddrs(&head) == 0 else { return [] }
        defer { freeifaddrs(head) }
        var out: [InterfaceAddress] = []
        var cursor = head
        while let ifa = cursor {
            defer { cursor = ifa.pointee.ifa_next }
            guard let addr = ifa.pointee.ifa_addr, addr.pointee.sa_family == sa_family_t(AF_INET),
                  ifa.pointee.ifa_flags & UInt32(IFF_UP) != 0,
                  let name = ifa.pointee.ifa_name else { continue }
            let mask = ifa.pointee.ifa_netmask.map(dottedQuad) ?? ""
            out.append(InterfaceAddress(interface: String(cString: name), address: dottedQuad(addr), netmask: mask))
        }
        return out
    }

    static func dottedQuad(_ sa: UnsafeMutablePointer<sockaddr>) -> String {
        sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
            var a = sin.pointee.sin_addr
            return withUnsafeBytes(of: &a) { $0.map(String.init).joined(separator: ".") }
        }
    }

    static func isLoopback(_ a: InterfaceAddress) -> Bool { a.address.hasPrefix("127.") }

    public func ipInfo() -> IPInfo? {
        let route = Self.readFile(routeTable).flatMap(Self.parseDefaultRoute)
        let addresses = Self.ipv4Addresses()
        if let route, let a = addresses.first(where: { $0.interface == route.interface }) {
            return IPInfo(interface: a.interface, address: a.address, netmask: a.netmask, gateway: route.gateway)
        }
        // No default route (access-point mode, isolated LAN): the first non-loopback address, else loopback.
        guard let a = addresses.first(where: { !Self.isLoopback($0) }) ?? addresses.first else { return nil }
        return IPInfo(interface: a.interface, address: a.address, netmask: a.netmask, gateway: "")
    }

    public func macAddress() -> String? {
        guard let iface = ipInfo()?.interface,
              let text = Self.readFile("\(sysClassNet)/\(iface)/address") else { return nil }
        let mac = text.split(separator: "\n").first.map(String.init) ?? ""
        return mac.isEmpty ? nil : mac
    }

    /// A small file's text (works for /proc files, whose size is reported as 0); nil when it can't be read.
    static func readFile(_ path: String) -> String? {
        (try? readSmallFile(path)).map { String(decoding: $0, as: UTF8.self) }
    }
}
