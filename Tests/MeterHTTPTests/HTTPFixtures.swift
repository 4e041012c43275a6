#if canImport(Glibc)
import Glibc
#endif
import FoundationEssentials
import KPM33B
@testable import MeterHTTP
import MeterService
import MeterTestSupport
import NIOCore
import Synchronization
import XCTest

final class FakeLink: MeterLink {
    let state: Mutex<MeterSnapshot>
    let lineDescription = "9600 8E1, address 1"
    init(_ s: MeterSnapshot) { state = Mutex(s) }
    func snapshot() -> MeterSnapshot { state.withLock { $0 } }
    func setRelay(closed: Bool) async throws -> RelayState {
        try await Task.sleep(for: .milliseconds(30))  // the bus takes a while
        let r = RelayState(bits: closed ? 7 : 0)
        state.withLock { $0.relay = r; $0.generation += 1 }
        return r
    }
}

enum HTTPFixture {
    static let serial = "33B0087654321"
    static let readAt: Int64 = 1_722_007_035

    /// Voltage L1 235.8 V, current L1 5.12 A, total power −1500 W (exporting), import energy 1234.567 kWh.
    static func snapshot() -> MeterSnapshot {
        var s = MeterSnapshot()
        s.generation = 1
        s.health = .online
        s.publishedAt = readAt
        var basic = [Float](repeating: 0, count: 26)
        basic[0] = 235.8; basic[1] = 236.1; basic[2] = 234.9
        basic[3] = 5.12; basic[4] = 0.5; basic[5] = 1.25
        basic[12] = -1500  // 0x0048 total active power
        basic[25] = 50.01
        s.basic = basic
        var energy = [Float](repeating: 0, count: 26)
        energy[(0x82 - 0x68) / 2] = 1234.567
        energy[(0x84 - 0x68) / 2] = 89.5
        energy[(0x88 - 0x68) / 2] = 12.25
        energy[(0x8A - 0x68) / 2] = 3.5
        s.energy = energy
        s.parameters = MeterParameters(
            serialNumber: serial, modbusAddress: 1, lineSettingsWord: 3, controlModeWord: 0xDD22, loadThresholdKW: 5,
            clock: MeterClock(year: 24, month: 7, day: 26, hour: 17, minute: 17, second: 15),
            prepaidEnergyKWh: 0, overdraftKWh: 0, forcedPowerWords: (0, 0), wirelessStatusWord: 0)
        s.relay = RelayState(bits: 7)
        for g in [RegisterGroup.basic, .energy, .parameters, .relay] { s.readAt[g.rawValue] = readAt }
        return s
    }

    struct Running {
        let server: APIServer
        let port: Int
        let link: FakeLink
        let system: RecordingSystemControl
        let settings: InMemoryDeviceSettings
    }

    static let html = "<!doctype html><title>meterext set-up</title><h1>Set-up ✓</h1>"

    static func api(link: FakeLink, system: RecordingSystemControl, settings: InMemoryDeviceSettings) -> MeterAPI {
        MeterAPI(link: link, settings: settings, system: system,
                 network: FixedNetworkInfo(info: IPInfo(interface: "eth0", address: "192.168.0.158",
                                                        netmask: "255.255.255.0", gateway: "192.168.0.1"),
                                           mac: "b8:27:eb:00:00:01"),
                 identity: DeviceIdentity(softwareVersion: "0.9.0", hardwareVersion: "test"),
                 calendar: UTCSettlementCalendar(), now: { 1_722_007_040 })
    }

    static func start(_ adjust: (inout APIServer.Configuration) -> Void = { _ in }) async throws -> Running {
        let link = FakeLink(snapshot())
        let system = RecordingSystemControl()
        let settings = InMemoryDeviceSettings()
        var config = APIServer.Configuration(host: "127.0.0.1", port: 0)
        adjust(&config)
        let server = APIServer(configuration: config,
                               dispatcher: api(link: link, system: system, settings: settings).dispatcher(),
                               setupPageHTML: html)
        let address = try await server.start()
        return Running(server: server, port: try XCTUnwrap(address.port), link: link, system: system, settings: settings)
    }
}

struct HTTPReply {
    var status: Int
    var headers: [(String, String)]
    var body: [UInt8]
    var text: String { String(decoding: body, as: UTF8.self) }
    func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name.lowercased() }?.1 }
}

/// A blocking TCP client that speaks just enough HTTP/1.1 to check raw bytes on the wire.
final class RawClient {
    let fd: Int32
    private var buffer: [UInt8] = []

    /// `host`: an IPv4 address of this machine; the server sees the connection coming from it.
    /// `source`: the local address to connect from (another loopback address such as 127.0.0.2).
    init(port: Int, host: String = "127.0.0.1", source: String? = nil, receiveTimeout: Int = 5) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXFailure(op: "socket") }
        var tv = timeval(tv_sec: receiveTimeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        if let source {
            var local = sockaddr_in()
            local.sin_family = sa_family_t(AF_INET)
            local.sin_addr.s_addr = inet_addr(source)
            let rc = withUnsafePointer(to: &local) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard rc == 0 else { close(fd); throw POSIXFailure(op: "bind") }
        }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr(host)
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else { close(fd); throw POSIXFailure(op: "connect") }
    }

    deinit { close(fd) }

    struct POSIXFailure: Error { var op: String; var code = errno }

    /// Sends everything; returns false when the peer stopped accepting (reset / closed).
    @discardableResult
    func send(_ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return false }
            offset += n
        }
        return true
    }

    func send(_ s: String) { send(Array(s.utf8)) }

    /// nil on EOF, timeout or error.
    private func fill() -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65536)
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { return false }
        buffer.append(contentsOf: chunk[0..<n])
        return true
    }

    /// One response (Content-Length framed). nil when the connection closed or timed out first.
    func readResponse() -> HTTPReply? {
        let crlf2: [UInt8] = [13, 10, 13, 10]
        var headerEnd: Int? = nil
        while headerEnd == nil {
            if buffer.count >= 4 {
                headerEnd = (0...(buffer.count - 4)).first { Array(buffer[$0..<$0 + 4]) == crlf2 }
            }
            if headerEnd == nil && !fill() { return nil }
        }
        let head = String(decoding: buffer[0..<headerEnd!], as: UTF8.self).split(separator: "\r\n", omittingEmptySubsequences: false).map(String.init)
        let status = Int(head[0].split(separator: " ")[1]) ?? 0
        let headers = head.dropFirst().compactMap { line -> (String, String)? in
            guard let c = line.firstIndex(of: ":") else { return nil }
            return (String(line[..<c]), String(line[line.index(after: c)...].drop(while: { $0 == " " })))
        }
        let length = headers.first { $0.0.lowercased() == "content-length" }.flatMap { Int($0.1) } ?? 0
        let bodyStart = headerEnd! + 4
        while buffer.count < bodyStart + length { if !fill() { return nil } }
        let body = Array(buffer[bodyStart..<bodyStart + length])
        buffer.removeFirst(bodyStart + length)
        if status == 100 { return readResponse() }
        return HTTPReply(status: status, headers: headers, body: body)
    }

    /// True when the server closed the connection (EOF or reset) within the receive timeout.
    func isClosedByPeer() -> Bool {
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { return true }
            if n < 0 { return errno == ECONNRESET }
        }
    }
}

func post(_ body: String, id: String? = nil) -> String {
    "POST /api HTTP/1.1\r\nHost: 192.168.0.158\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
}

/// Runs a shell command line and returns its stdout.
func shell(_ command: String) -> String {
    guard let pipe = popen(command, "r") else { return "" }
    defer { pclose(pipe) }
    var out: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = fread(&chunk, 1, chunk.count, pipe)
        if n == 0 { break }
        out.append(contentsOf: chunk[0..<n])
    }
    return String(decoding: out, as: UTF8.self)
}

func decodeJSON<T: Decodable>(_ type: T.Type, _ bytes: [UInt8]) throws -> T {
    try JSONDecoder().decode(T.self, from: Data(bytes))
}

struct ErrorBody: Decodable, Equatable {
    var result: String
    var error: String
    var message: String?
}

/// An IPv4 address of this machine outside 127.0.0.0/8 (eth0's), nil when there is none: a connection to it
/// from here is not loopback as far as the server is concerned.
func nonLoopbackIPv4Address() -> String? {
    var list: UnsafeMutablePointer<ifaddrs>? = nil
    guard getifaddrs(&list) == 0 else { return nil }
    defer { freeifaddrs(list) }
    var next = list
    while let entry = next {
        defer { next = entry.pointee.ifa_next }
        guard let sa = entry.pointee.ifa_addr, sa.pointee.sa_family == sa_family_t(AF_INET) else { continue }
        let address = sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr }
        guard UInt32(bigEndian: address.s_addr) >> 24 != 127 else { continue }
        var text = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
        var copy = address
        guard inet_ntop(AF_INET, &copy, &text, socklen_t(text.count)) != nil else { continue }
        return String(cString: text)
    }
    return nil
}
