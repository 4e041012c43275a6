@testable import MeterHTTP
import MeterService
import NIOCore
import NIOEmbedded
import Synchronization
import XCTest

/// Every command answers OK and records that it ran (all synchronous: the embedded loop runs no tasks).
final class RecordingCommands: Sendable {
    static let reading = ["meter_reading", "system_status", "get_ip_info", "wifi_status", "wifi_scan", "relay_status",
                          "meter_info", "meter_status"]
    let ran = Mutex<[String]>([])
    var commands: [String] { ran.withLock { $0 } }

    func dispatcher() -> CommandDispatcher {
        var registry = CommandRegistry()
        for cmd in CommandAuthorizer.protectedCommands.union(Self.reading) {
            registry.register(cmd, sync: { [self] request in
                ran.withLock { $0.append(request.cmd) }
                return .ok(OKReply())
            })
        }
        return CommandDispatcher(registry: registry)
    }
}

/// The protection matrix through the real pipeline, with the peer address the socket would report.
final class AccessTests: XCTestCase {
    static let token = "c0ffee00c0ffee00c0ffee00c0ffee00"
    static let remote = try! SocketAddress(ipAddress: "192.0.2.77", port: 50000)
    static let setupClient = try! SocketAddress(ipAddress: "10.42.0.23", port: 50000)
    /// The board's own address on the set-up access point (the connection's local address).
    static let accessPointLocal = try! SocketAddress(ipAddress: "10.42.0.1", port: 80)
    static let lanLocal = try! SocketAddress(ipAddress: "192.168.0.158", port: 80)
    static let refusal = #"{"error":"unauthorized","message":"\#(CommandAuthorizer.refusalMessage)","result":"ERROR","id":"9"}"#

    var recorder = RecordingCommands()

    func access(tokenRequired: Bool = true) -> AccessSettings {
        AccessSettings(
            authorizer: CommandAuthorizer(tokenRequired: tokenRequired, tokenIsValid: { $0 == Self.token }),
            arrivedOnOpenSetupAccessPoint: { PeerAddress.isIPv4($0, equalTo: "10.42.0.1") })
    }

    /// One request from `peer`; the raw response.
    func send(_ cmd: String, from peer: SocketAddress, to local: SocketAddress = AccessTests.lanLocal,
              authorization: String? = nil,
              access: AccessSettings? = nil, host: String? = "192.168.0.158", origin: String? = nil) throws -> String {
        let channel = EmbeddedChannel()
        try APIServer.configureConnection(
            channel.pipeline.syncOperations, dispatcher: recorder.dispatcher(), setupPage: ByteBuffer(string: "<p>"),
            settings: HTTPHandlerSettings(maxBodyBytes: 1024, lingerTime: .milliseconds(10), access: access ?? self.access()))
        channel.localAddress = local
        try channel.connect(to: peer).wait()
        let body = #"{"cmd":"\#(cmd)","id":"9"}"#
        let auth = authorization.map { "Authorization: \($0)\r\n" } ?? ""
        let hostLine = host.map { "Host: \($0)\r\n" } ?? ""
        let originLine = origin.map { "Origin: \($0)\r\n" } ?? ""
        try channel.writeInbound(ByteBuffer(string: "POST /api HTTP/1.1\r\n\(hostLine)\(originLine)\(auth)Content-Length: \(body.utf8.count)\r\n\r\n\(body)"))
        var out = ""
        while let buf = try channel.readOutbound(as: ByteBuffer.self) { out += String(buffer: buf) }
        _ = try? channel.finish()
        return out
    }

    func assertRefused(_ out: String, _ message: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertTrue(out.hasPrefix("HTTP/1.1 401 Unauthorized\r\n"), "\(message): \(out)", file: file, line: line)
        XCTAssertTrue(out.contains("\r\nwww-authenticate: Bearer\r\n"), "\(message): \(out)", file: file, line: line)
        XCTAssertTrue(out.contains("\r\ncontent-type: application/json\r\n"), message, file: file, line: line)
        XCTAssertTrue(out.hasSuffix("\r\n\r\n" + Self.refusal), "\(message): \(out)", file: file, line: line)
    }

    func assertAccepted(_ out: String, _ message: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertTrue(out.hasPrefix("HTTP/1.1 200 OK\r\n"), "\(message): \(out)", file: file, line: line)
        XCTAssertTrue(out.hasSuffix(#"{"result":"OK","id":"9"}"#), "\(message): \(out)", file: file, line: line)
        XCTAssertFalse(out.lowercased().contains("www-authenticate"), message, file: file, line: line)
    }

    let protected = CommandAuthorizer.protectedCommands.sorted()

    func testRemoteWithoutOrWithWrongTokenIsRefusedAndNothingRuns() throws {
        for cmd in protected {
            assertRefused(try send(cmd, from: Self.remote), "\(cmd) without token")
            for header in ["Bearer wrong", "Bearer \(Self.token)x", "Basic \(Self.token)", Self.token, "Bearer ",
                           "Bearer"] {
                assertRefused(try send(cmd, from: Self.remote, authorization: header), "\(cmd) with '\(header)'")
            }
        }
        XCTAssertEqual(recorder.commands, [], "a refused command ran")
    }

    func testRemoteWithTheTokenRuns() throws {
        for cmd in protected {
            assertAccepted(try send(cmd, from: Self.remote, authorization: "Bearer \(Self.token)"), cmd)
        }
        // The scheme is case-insensitive; spaces around the token are not part of it.
        assertAccepted(try send("relay_set", from: Self.remote, authorization: "bearer  \(Self.token) "), "bearer")
        XCTAssertEqual(recorder.commands, protected + ["relay_set"])
    }

    func testLoopbackRunsWithoutToken() throws {
        for address in ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"] {
            recorder = RecordingCommands()
            let peer = try SocketAddress(ipAddress: address, port: 40000)
            for cmd in protected { assertAccepted(try send(cmd, from: peer), "\(cmd) from \(address)") }
            XCTAssertEqual(recorder.commands, protected, address)
        }
    }

    /// Issue 13: a phone on the access point (whose password is public) may set the board up, nothing more.
    func testOpenSetupAccessPointRunsOnlyTheSetUpCommandsWithoutToken() throws {
        let setup = protected.filter { CommandAuthorizer.setupCommands.contains($0) }
        let others = protected.filter { !CommandAuthorizer.setupCommands.contains($0) }
        XCTAssertEqual(Set(setup), ["wifi_config", "meter_setkey", "wifi_ap"])
        for cmd in setup {
            assertAccepted(try send(cmd, from: Self.setupClient, to: Self.accessPointLocal), "\(cmd) from the AP")
        }
        for cmd in ["relay_set", "firmware_update", "download_file", "request_post", "meter_factreset",
                    "system_restart"] {
            XCTAssertTrue(others.contains(cmd), cmd)
        }
        for cmd in others {
            assertRefused(try send(cmd, from: Self.setupClient, to: Self.accessPointLocal), "\(cmd) from the AP")
            assertAccepted(try send(cmd, from: Self.setupClient, to: Self.accessPointLocal,
                                    authorization: "Bearer \(Self.token)"), "\(cmd) from the AP with the token")
        }
        XCTAssertEqual(recorder.commands, setup + others)

        recorder = RecordingCommands()
        let apOpen = Atomic<Bool>(false)
        var closed = access()
        closed.arrivedOnOpenSetupAccessPoint = { apOpen.load(ordering: .relaxed) && PeerAddress.isIPv4($0, equalTo: "10.42.0.1") }
        for cmd in protected {
            assertRefused(try send(cmd, from: Self.setupClient, to: Self.accessPointLocal, access: closed), "\(cmd), AP closed")
        }
        XCTAssertEqual(recorder.commands, [])
        apOpen.store(true, ordering: .relaxed)
        assertAccepted(try send("wifi_config", from: Self.setupClient, to: Self.accessPointLocal, access: closed),
                       "AP reopened")
        // Trust follows the address the request arrived on, not the source: a LAN host that picks a 10.42.0.x
        // source (or is on a 10.42.0.0/24 LAN) and talks to the board's LAN address is not on the access point.
        assertRefused(try send("wifi_config", from: Self.setupClient, to: Self.lanLocal, access: closed), "LAN address")
    }

    func testTokenNotRequiredOpensEverything() throws {
        for cmd in protected { assertAccepted(try send(cmd, from: Self.remote, access: access(tokenRequired: false)), cmd) }
        XCTAssertEqual(recorder.commands, protected)
    }

    func testReadingCommandsAreOpenFromAnywhere() throws {
        for cmd in RecordingCommands.reading {
            assertAccepted(try send(cmd, from: Self.remote), cmd)
            assertAccepted(try send(cmd, from: Self.remote, authorization: "Bearer wrong"), "\(cmd), wrong token")
        }
        XCTAssertEqual(recorder.commands, RecordingCommands.reading.flatMap { [$0, $0] })
        let unknown = try send("coffee", from: Self.remote)
        XCTAssertTrue(unknown.hasPrefix("HTTP/1.1 200 OK\r\n") && unknown.contains("unkown_cmd"), unknown)
    }

    // MARK: browsers: CSRF and DNS rebinding

    func browserAccess() -> AccessSettings {
        var a = access()
        a.browser = BrowserPolicy(extraNames: ["Meter.Example.Net"], hostName: { "meterbox" })
        return a
    }

    func status(_ out: String) -> String { out.split(separator: "\r\n").first.map(String.init) ?? "" }

    func testCrossOriginPagesCannotChangeTheBoardEvenFromLoopbackOrWithTheToken() throws {
        let local = try SocketAddress(ipAddress: "127.0.0.1", port: 40000)
        for cmd in protected {
            let out = try send(cmd, from: local, access: browserAccess(), origin: "http://evil.example")
            XCTAssertEqual(status(out), "HTTP/1.1 403 Forbidden", cmd)
            XCTAssertTrue(out.hasSuffix(#"{"error":"cross_origin","message":"this request changes the board but was sent by a web page from 'http://evil.example', not by the board's own page: refused (cross-site request). Apps and curl send no Origin header and are not affected","result":"ERROR","id":"9"}"#), out)
            let withToken = try send(cmd, from: Self.remote, authorization: "Bearer \(Self.token)", access: browserAccess(),
                                     origin: "http://192.168.0.99")
            XCTAssertTrue(withToken.contains(#""error":"cross_origin""#), withToken)
            XCTAssertTrue(try send(cmd, from: local, access: browserAccess(), origin: "null").contains("cross_origin"))
            // The board's own page (same scheme, host and port as the request) may.
            assertAccepted(try send(cmd, from: local, access: browserAccess(), origin: "http://192.168.0.158"), cmd)
            assertAccepted(try send(cmd, from: local, access: browserAccess(), host: "meterbox.local:8080",
                                    origin: "http://MeterBox.local:8080"), cmd)
        }
        XCTAssertEqual(recorder.commands, protected.flatMap { [$0, $0] })
        // Same host, other port: another origin.
        XCTAssertTrue(try send("relay_set", from: local, access: browserAccess(), host: "192.168.0.158:8080",
                               origin: "http://192.168.0.158").contains("cross_origin"))
    }

    func testARebindedHostCannotChangeTheBoardButMayRead() throws {
        let local = try SocketAddress(ipAddress: "127.0.0.1", port: 40000)
        let out = try send("system_restart", from: local, access: browserAccess(), host: "attacker.example:80",
                           origin: "http://attacker.example")
        XCTAssertEqual(status(out), "HTTP/1.1 403 Forbidden")
        XCTAssertTrue(out.hasSuffix(#"{"error":"unknown_host","message":"'attacker.example:80' is not an address or name of this board: a request that changes the board must use its IP address, its hostname, <hostname>.local or a name from host_names in its configuration (refused to protect against DNS rebinding)","result":"ERROR","id":"9"}"#), out)
        XCTAssertTrue(try send("system_restart", from: local, access: browserAccess(), host: "attacker.example")
            .contains("unknown_host"), "no Origin (a rebinding page's fetch may omit it): the Host still decides")
        XCTAssertEqual(recorder.commands, [])
        for host in ["192.168.0.158", "10.42.0.1:80", "[::1]:8080", "[fe80::1]", "meterbox", "meterbox.local",
                     "MeterBox.Local.", "localhost:8080", "meter.example.net", "meter.example.net:80"] {
            assertAccepted(try send("relay_set", from: local, access: browserAccess(), host: host), host)
        }
        for host in ["meterbox.evil", "192.168.0", "[::1", "1.2.3.4:x", "evilmeterbox.local"] {
            XCTAssertTrue(try send("relay_set", from: local, access: browserAccess(), host: host).contains("unknown_host"), host)
        }
        assertAccepted(try send("relay_set", from: local, access: browserAccess(), host: nil), "no Host (HTTP/1.0 tools)")
        // Reading commands stay open to any name and any page (reverse proxies, dashboards).
        assertAccepted(try send("meter_reading", from: Self.remote, access: browserAccess(), host: "proxy.example",
                                origin: "http://dashboard.example"), "reading")
    }

    func testPeerAddressClassification() throws {
        func v(_ s: String) throws -> SocketAddress { try SocketAddress(ipAddress: s, port: 1) }
        XCTAssertTrue(PeerAddress.isLoopback(try v("127.0.0.1")))
        XCTAssertTrue(PeerAddress.isLoopback(try v("127.255.0.9")))
        XCTAssertTrue(PeerAddress.isLoopback(try v("::1")))
        XCTAssertTrue(PeerAddress.isLoopback(try v("::ffff:127.0.0.1")))
        XCTAssertFalse(PeerAddress.isLoopback(try v("128.0.0.1")))
        XCTAssertFalse(PeerAddress.isLoopback(try v("10.42.0.1")))
        XCTAssertFalse(PeerAddress.isLoopback(try v("::2")))
        XCTAssertFalse(PeerAddress.isLoopback(try v("::ffff:10.0.0.1")))
        XCTAssertFalse(PeerAddress.isLoopback(try v("fe80::1")))
        XCTAssertTrue(PeerAddress.isIPv4(try v("10.42.0.255"), in: "10.42.0.0", prefixLength: 24))
        XCTAssertTrue(PeerAddress.isIPv4(try v("::ffff:10.42.0.7"), in: "10.42.0.0", prefixLength: 24))
        XCTAssertFalse(PeerAddress.isIPv4(try v("10.42.1.1"), in: "10.42.0.0", prefixLength: 24))
        XCTAssertFalse(PeerAddress.isIPv4(try v("10.42.0.1"), in: "10.42.0", prefixLength: 24))
        XCTAssertFalse(PeerAddress.isIPv4(try v("10.42.0.1"), in: "10.42.0.0", prefixLength: 33))
        XCTAssertTrue(PeerAddress.isIPv4(try v("192.0.2.1"), in: "0.0.0.0", prefixLength: 0))
    }
}
