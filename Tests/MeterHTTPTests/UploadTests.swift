#if canImport(Glibc)
import Glibc
#endif
import FoundationEssentials
@testable import MeterHTTP
import MeterService
import NIOCore
import NIOPosix
import Synchronization
import XCTest

/// What the `/ota` hook received, and where it ran.
final class UploadRecorder: Sendable {
    let bodies = Mutex<[[UInt8]]>([])
    let ranOnEventLoop = Atomic<Bool>(false)
    let reply = Mutex<(status: Int, text: String)>((200, "Update_Success!_Rebooting..."))
    var count: Int { bodies.withLock { $0.count } }

    func route(maxBodyBytes: Int) -> UploadRoute {
        UploadRoute(pageHTML: UploadTests.page, maxBodyBytes: maxBodyBytes) { [self] bytes in
            if MultiThreadedEventLoopGroup.currentEventLoop != nil { ranOnEventLoop.store(true, ordering: .relaxed) }
            bodies.withLock { $0.append(bytes) }
            return reply.withLock { $0 }
        }
    }
}

/// `/ota` over real sockets, and the protection rule from a real non-loopback address.
final class UploadTests: XCTestCase {
    static let page = "<!DOCTYPE html><title>Firmware update</title><form id=\"ota\"></form> ✓"
    static let token = "feedfacefeedfacefeedfacefeedface"
    static let cap = 256 * 1024

    var server: APIServer!
    var port = 0
    let uploads = UploadRecorder()
    let commands = RecordingCommands()

    func start(host: String = "127.0.0.1", upload: Bool = true,
               _ adjust: (inout APIServer.Configuration) -> Void = { _ in }) async throws {
        var config = APIServer.Configuration(host: host, port: 0)
        config.idleTimeout = .milliseconds(500)
        config.lingerTime = .milliseconds(200)
        config.tokenIsValid = { $0 == Self.token }
        if upload { config.upload = uploads.route(maxBodyBytes: Self.cap) }
        adjust(&config)
        server = APIServer(configuration: config, dispatcher: commands.dispatcher(), setupPageHTML: "<p>setup</p>")
        let address = try await server.start()
        port = try XCTUnwrap(address.port)
    }

    override func tearDown() async throws {
        try await server?.stop()
    }

    /// Bytes that would show any reordering, truncation or text conversion.
    static func image(_ count: Int) -> [UInt8] { (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 8) } }

    func uploadRequest(_ body: [UInt8], path: String = "/ota", extra: String = "") -> [UInt8] {
        Array("POST \(path) HTTP/1.1\r\nHost: 192.168.0.158\r\nContent-Type: application/octet-stream\r\n\(extra)Content-Length: \(body.count)\r\n\r\n".utf8) + body
    }

    func assertServing(file: StaticString = #filePath, line: UInt = #line) throws {
        let c = try RawClient(port: port)
        c.send("GET /ota HTTP/1.1\r\nHost: 192.168.0.158\r\n\r\n")
        XCTAssertEqual(c.readResponse()?.status, 200, "stopped serving", file: file, line: line)
        c.send(post(#"{"cmd":"meter_reading"}"#))
        XCTAssertEqual(c.readResponse()?.status, 200, "stopped serving", file: file, line: line)
    }

    func testDefaultCapIs64MiBAndAPICapIsUnchanged() {
        XCTAssertEqual(UploadRoute(pageHTML: "", receive: { _ in (200, "") }).maxBodyBytes, 64 * 1024 * 1024)
        XCTAssertEqual(APIServer.Configuration(host: "::", port: 0).maxBodyBytes, 16 * 1024)
        XCTAssertTrue(APIServer.Configuration(host: "::", port: 0).tokenRequired)
    }

    func testPageAtBothPaths() async throws {
        try await start()
        let c = try RawClient(port: port)
        for path in ["/ota", "/ota.html", "/ota?x=1"] {
            c.send("GET \(path) HTTP/1.1\r\nHost: 192.168.0.158\r\n\r\n")
            let r = try XCTUnwrap(c.readResponse(), path)
            XCTAssertEqual(r.status, 200, path)
            XCTAssertEqual(r.header("content-type"), "text/html; charset=utf-8")
            XCTAssertEqual(r.text, Self.page, path)
        }
        c.send("DELETE /ota HTTP/1.1\r\nHost: 192.168.0.158\r\n\r\n")
        let delete = try XCTUnwrap(c.readResponse())
        XCTAssertEqual(delete.status, 405)
        XCTAssertEqual(delete.header("allow"), "GET, HEAD, POST")
        let head = shell("curl -s -I http://127.0.0.1:\(port)/ota.html").lowercased()
        XCTAssertTrue(head.hasPrefix("http/1.1 200 ok\r\n"), head)
        XCTAssertTrue(head.contains("content-length: \(Self.page.utf8.count)\r\n"), head)
        XCTAssertEqual(uploads.count, 0)
    }

    func testUploadReachesTheHookAndItsTextIsTheReply() async throws {
        try await start()
        let image = Self.image(200_000)
        let c = try RawClient(port: port)
        c.send(uploadRequest(image))
        let r = try XCTUnwrap(c.readResponse())
        XCTAssertEqual(r.status, 200)
        XCTAssertEqual(r.header("content-type"), "text/plain; charset=utf-8")
        XCTAssertEqual(r.text, "Update_Success!_Rebooting...")
        XCTAssertNil(r.header("connection"), "keep-alive after a successful upload")
        XCTAssertEqual(uploads.bodies.withLock { $0 }, [image])
        XCTAssertFalse(uploads.ranOnEventLoop.load(ordering: .relaxed), "the hook blocked the event loop")

        // The hook's status goes out as is; /ota.html takes uploads too; so does a chunked body.
        uploads.reply.withLock { $0 = (400, "Update_Failed: the image signature is not valid (bad_signature)") }
        c.send(uploadRequest([1, 2, 3], path: "/ota.html"))
        let failed = try XCTUnwrap(c.readResponse())
        XCTAssertEqual(failed.status, 400)
        XCTAssertEqual(failed.text, "Update_Failed: the image signature is not valid (bad_signature)")
        c.send("POST /ota HTTP/1.1\r\nHost: 192.168.0.158\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        XCTAssertEqual(c.readResponse()?.status, 400)
        XCTAssertEqual(uploads.bodies.withLock { $0.suffix(2) }, [[1, 2, 3], Array("abcde".utf8)])
    }

    /// What the page's XMLHttpRequest sends, done by curl with a file (it waits for 100-continue on big bodies).
    func testCurlUploadLikeTheBrowserPage() async throws {
        try await start()
        let image = Self.image(Self.cap)
        let path = "/tmp/meterext-ota-\(getpid()).img"
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        XCTAssertEqual(image.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }, image.count)
        close(fd)
        defer { unlink(path) }
        let out = shell("curl -s -w ' %{http_code} %{content_type}' -H 'Content-Type: application/octet-stream' --data-binary @\(path) http://127.0.0.1:\(port)/ota")
        XCTAssertEqual(out, "Update_Success!_Rebooting... 200 text/plain; charset=utf-8")
        XCTAssertEqual(uploads.bodies.withLock { $0 }, [image])

        let over = shell("head -c \(Self.cap + 1) /dev/zero | curl -s -w ' %{http_code}' --data-binary @- http://127.0.0.1:\(port)/ota")
        XCTAssertEqual(over, "the upload is larger than the limit of \(Self.cap) bytes 413")
        XCTAssertEqual(uploads.count, 1)
    }

    func testOverTheCapIs413AndTheServerGoesOn() async throws {
        try await start()
        let announced = try RawClient(port: port)
        announced.send(Array("POST /ota HTTP/1.1\r\nHost: 192.168.0.158\r\nContent-Length: \(Self.cap + 1)\r\n\r\n".utf8))
        let r = try XCTUnwrap(announced.readResponse())
        XCTAssertEqual(r.status, 413)
        XCTAssertEqual(r.header("content-type"), "text/plain; charset=utf-8")
        XCTAssertEqual(r.header("connection"), "close")
        XCTAssertEqual(r.text, "the upload is larger than the limit of \(Self.cap) bytes")
        XCTAssertTrue(announced.isClosedByPeer())
        try assertServing()

        // No length announced: the cap applies while collecting.
        let chunked = try RawClient(port: port)
        chunked.send("POST /ota HTTP/1.1\r\nHost: 192.168.0.158\r\nTransfer-Encoding: chunked\r\n\r\n")
        let chunk = String(repeating: "y", count: 0x10000)
        for _ in 0..<5 { chunked.send("10000\r\n\(chunk)\r\n") }
        let c413 = try XCTUnwrap(chunked.readResponse())
        XCTAssertEqual(c413.status, 413)
        XCTAssertTrue(chunked.isClosedByPeer())
        XCTAssertEqual(uploads.count, 0)

        // The slot was given back: the next upload goes through.
        let next = try RawClient(port: port)
        next.send(uploadRequest(Self.image(Self.cap)))
        XCTAssertEqual(next.readResponse()?.status, 200)
        XCTAssertEqual(uploads.count, 1)
        try assertServing()
    }

    func testStalledUploadTimesOutAndFreesTheSlot() async throws {
        try await start()
        let started = ContinuousClock.now
        let slow = try RawClient(port: port)
        slow.send(Array(uploadRequest(Self.image(1000)).dropLast(500)))
        let r = try XCTUnwrap(slow.readResponse())
        XCTAssertEqual(r.status, 408)
        XCTAssertTrue(slow.isClosedByPeer())
        XCTAssertLessThan(ContinuousClock.now - started, .seconds(3))
        XCTAssertEqual(uploads.count, 0)
        let next = try RawClient(port: port)
        next.send(uploadRequest([9]))
        XCTAssertEqual(next.readResponse()?.status, 200)
    }

    func testOneUploadAtATime() async throws {
        try await start()
        let first = try RawClient(port: port)
        let image = Self.image(1000)
        let request = uploadRequest(image)
        first.send(Array(request.prefix(request.count - 10)))
        usleep(100_000)  // let the server take the head
        let second = try RawClient(port: port)
        second.send(uploadRequest([1]))
        let busy = try XCTUnwrap(second.readResponse())
        XCTAssertEqual(busy.status, 503)
        XCTAssertEqual(busy.header("retry-after"), "10")
        XCTAssertEqual(busy.header("content-type"), "text/plain; charset=utf-8")
        first.send(Array(request.suffix(10)))
        XCTAssertEqual(first.readResponse()?.status, 200)
        let third = try RawClient(port: port)
        third.send(uploadRequest([1]))
        XCTAssertEqual(third.readResponse()?.status, 200)
        XCTAssertEqual(uploads.bodies.withLock { $0 }, [image, [1]])
    }

    func testWithoutAnUploadRouteTheOTAPathsAre404() async throws {
        try await start(upload: false)
        let c = try RawClient(port: port)
        for request in ["GET /ota HTTP/1.1\r\nHost: 192.168.0.158\r\n\r\n", "GET /ota.html HTTP/1.1\r\nHost: 192.168.0.158\r\n\r\n",
                        "POST /ota HTTP/1.1\r\nHost: 192.168.0.158\r\nContent-Length: 3\r\n\r\nabc"] {
            c.send(request)
            XCTAssertEqual(c.readResponse()?.status, 404, request)
        }
    }

    // MARK: a real client that is not on loopback

    func nonLoopback() throws -> String {
        guard let address = nonLoopbackIPv4Address() else {
            throw XCTSkip("this machine has no IPv4 address outside 127.0.0.0/8")
        }
        return address
    }

    func testNonLoopbackPeerNeedsTheTokenForUploadsAndProtectedCommands() async throws {
        let address = try nonLoopback()
        try await start(host: "0.0.0.0")
        let remote = try RawClient(port: port, host: address)

        remote.send(uploadRequest(Self.image(1000)))
        let refused = try XCTUnwrap(remote.readResponse())
        XCTAssertEqual(refused.status, 401)
        XCTAssertEqual(refused.header("www-authenticate"), "Bearer")
        XCTAssertEqual(refused.header("content-type"), "text/plain; charset=utf-8")
        XCTAssertEqual(refused.text, CommandAuthorizer.refusalMessage)
        XCTAssertTrue(remote.isClosedByPeer())
        XCTAssertEqual(uploads.count, 0)

        // curl waits for 100-continue: it is refused before sending the image.
        let wrong = shell("head -c 2000000 /dev/zero | curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer nope' --data-binary @- http://\(address):\(port)/ota")
        XCTAssertEqual(wrong, "401")
        XCTAssertEqual(uploads.count, 0)

        let authorized = try RawClient(port: port, host: address)
        authorized.send(uploadRequest([7, 7], extra: "Authorization: Bearer \(Self.token)\r\n"))
        XCTAssertEqual(authorized.readResponse()?.status, 200)
        XCTAssertEqual(uploads.bodies.withLock { $0 }, [[7, 7]])

        // /api over the same real socket: refused, then run with the token; readings stay open.
        for cmd in CommandAuthorizer.protectedCommands.sorted() {
            authorized.send(post(#"{"cmd":"\#(cmd)","id":3}"#))
            let r = try XCTUnwrap(authorized.readResponse(), cmd)
            XCTAssertEqual(r.status, 401, cmd)
            XCTAssertEqual(r.header("www-authenticate"), "Bearer")
            let e = try decodeJSON(ErrorBody.self, r.body)
            XCTAssertEqual(e, ErrorBody(result: "ERROR", error: "unauthorized", message: CommandAuthorizer.refusalMessage))
            XCTAssertTrue(r.text.hasSuffix(#","id":3}"#), r.text)
        }
        XCTAssertEqual(commands.commands, [])
        let body = #"{"cmd":"system_restart"}"#
        authorized.send("POST /api HTTP/1.1\r\nHost: 192.168.0.158\r\nAuthorization: Bearer \(Self.token)\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)")
        XCTAssertEqual(authorized.readResponse()?.status, 200)
        authorized.send(post(#"{"cmd":"meter_reading"}"#))
        XCTAssertEqual(authorized.readResponse()?.status, 200)
        XCTAssertEqual(commands.commands, ["system_restart", "meter_reading"])

        // The same server from loopback: no token needed.
        let local = try RawClient(port: port)
        local.send(post(#"{"cmd":"meter_factreset"}"#))
        XCTAssertEqual(local.readResponse()?.status, 200)
        local.send(uploadRequest([5]))
        XCTAssertEqual(local.readResponse()?.status, 200)
        XCTAssertEqual(commands.commands.last, "meter_factreset")
        XCTAssertEqual(uploads.count, 2)
    }

    func testNonLoopbackPeerOnTheOpenAccessPointOrWithTokenNotRequired() async throws {
        let address = try nonLoopback()
        let apOpen = Atomic<Bool>(true)
        try await start(host: "0.0.0.0") { config in
            config.arrivedOnOpenSetupAccessPoint = { local in apOpen.load(ordering: .relaxed) && local.ipAddress == address }
        }
        let c = try RawClient(port: port, host: address)
        c.send(post(#"{"cmd":"wifi_config"}"#))
        XCTAssertEqual(c.readResponse()?.status, 200)
        // A firmware upload needs the token even from the access point (issue 13); the refusal closes the connection.
        let u = try RawClient(port: port, host: address)
        u.send(uploadRequest([1]))
        XCTAssertEqual(u.readResponse()?.status, 401)
        let c2 = try RawClient(port: port, host: address)
        c2.send(post(#"{"cmd":"wifi_config"}"#))
        XCTAssertEqual(c2.readResponse()?.status, 200)
        apOpen.store(false, ordering: .relaxed)
        c.send(post(#"{"cmd":"wifi_config"}"#))
        XCTAssertEqual(c.readResponse()?.status, 401)
        XCTAssertEqual(commands.commands, ["wifi_config", "wifi_config"])
        XCTAssertEqual(uploads.count, 0)
        try await server.stop()

        try await start(host: "0.0.0.0") { $0.tokenRequired = false }
        let open = try RawClient(port: port, host: address)
        open.send(post(#"{"cmd":"relay_set"}"#))
        XCTAssertEqual(open.readResponse()?.status, 200)
        open.send(uploadRequest([2]))
        XCTAssertEqual(open.readResponse()?.status, 200)
        XCTAssertEqual(commands.commands, ["wifi_config", "wifi_config", "relay_set"])
        XCTAssertEqual(uploads.count, 1)
    }
}
