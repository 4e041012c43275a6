import KPM33B
@testable import MeterHTTP
import MeterService
import MeterTestSupport
import NIOCore
import NIOEmbedded
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Raw bytes in, raw bytes out, through the same pipeline the server builds.
final class EmbeddedTests: XCTestCase {
    /// Holds write promises until the test releases them, like a socket that hasn't drained yet.
    final class HeldWrites: ChannelOutboundHandler {
        typealias OutboundIn = ByteBuffer
        var promises: [EventLoopPromise<Void>] = []
        func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
            let p = context.eventLoop.makePromise(of: Void.self)
            promises.append(p)
            if let promise { p.futureResult.cascade(to: promise) }
            context.write(data, promise: nil)
        }
    }

    var system: RecordingSystemControl!

    func makeChannel(hold: HeldWrites? = nil, idle: TimeAmount = .seconds(10)) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        system = RecordingSystemControl()
        let api = HTTPFixture.api(link: FakeLink(HTTPFixture.snapshot()), system: system,
                                  settings: InMemoryDeviceSettings())
        if let hold { try channel.pipeline.syncOperations.addHandler(hold) }
        var settings = HTTPHandlerSettings(maxBodyBytes: 64, lingerTime: .milliseconds(10))
        settings.limits.idleTimeout = idle
        settings.limits.headTimeout = idle
        settings.runAfterReply = { $0() }  // the embedded loop runs no other threads; the loopback tests check the queue
        try APIServer.configureConnection(
            channel.pipeline.syncOperations, dispatcher: api.dispatcher(), setupPage: ByteBuffer(string: "<p>"),
            settings: settings)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return channel
    }

    func output(_ channel: EmbeddedChannel) throws -> String {
        var all = ""
        while let buf = try channel.readOutbound(as: ByteBuffer.self) { all += String(buffer: buf) }
        return all
    }

    func testRestartRunsOnlyAfterTheReplyIsFlushed() throws {
        let hold = HeldWrites()
        let channel = try makeChannel(hold: hold)
        try channel.writeInbound(ByteBuffer(string: "POST /api HTTP/1.1\r\nContent-Length: 24\r\n\r\n{\"cmd\":\"system_restart\"}"))
        let out = try output(channel)
        XCTAssertTrue(out.hasPrefix("HTTP/1.1 200 OK\r\n"), out)
        XCTAssertTrue(out.hasSuffix("\r\n\r\n{\"result\":\"OK\"}"), out)
        XCTAssertEqual(system.restarts, 0, "must not restart before the reply left")
        hold.promises.forEach { $0.succeed(()) }
        XCTAssertEqual(system.restarts, 1)
        _ = try channel.finish()
    }

    func testFormContentTypeIsParsedAsJSONAndRawBytesAreExact() throws {
        let channel = try makeChannel()
        try channel.writeInbound(ByteBuffer(string:
            "POST /api HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 30\r\n\r\n{\"cmd\":\"coffee\",\"id\":\"123\"}   "))
        let body = #"{"error":"unkown_cmd","message":"unknown command 'coffee'","result":"ERROR","id":"123"}"#
        XCTAssertEqual(try output(channel),
                       "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: \(body.utf8.count)\r\n\r\n\(body)")
        _ = try channel.finish()
    }

    func testBodyOverTheCapIs413WithoutWaitingForTheBody() throws {
        let channel = try makeChannel()
        try channel.writeInbound(ByteBuffer(string: "POST /api HTTP/1.1\r\nContent-Length: 65\r\nExpect: 100-continue\r\n\r\n"))
        let out = try output(channel)
        XCTAssertTrue(out.hasPrefix("HTTP/1.1 413 Payload Too Large\r\n"), out)
        XCTAssertTrue(out.contains("connection: close\r\n"))
        XCTAssertFalse(out.contains("100 Continue"))
        XCTAssertFalse(channel.isActive && channel.isWritable && out.isEmpty)
        _ = try? channel.finish()
    }

    func testExpectContinueWithinTheCap() throws {
        let channel = try makeChannel()
        try channel.writeInbound(ByteBuffer(string: "POST /api HTTP/1.1\r\nContent-Length: 23\r\nExpect: 100-continue\r\n\r\n"))
        XCTAssertEqual(try output(channel), "HTTP/1.1 100 Continue\r\n\r\n")
        try channel.writeInbound(ByteBuffer(string: "{\"cmd\":\"meter_reading\"}"))
        XCTAssertTrue(try output(channel).hasPrefix("HTTP/1.1 200 OK\r\n"))
        _ = try channel.finish()
    }

    func testIdleTimeoutMidRequestGives408AndCloses() throws {
        let channel = try makeChannel(idle: .milliseconds(50))
        try channel.writeInbound(ByteBuffer(string: "POST /api HTTP/1.1\r\nContent-Length: 23\r\n\r\n{\"cmd\""))
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(100))
        let out = try output(channel)
        XCTAssertTrue(out.hasPrefix("HTTP/1.1 408 Request Timeout\r\n"), out)
        XCTAssertTrue(out.hasSuffix(#"{"error":"request_timeout","message":"the request was not completed in time","result":"ERROR"}"#))
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        XCTAssertFalse(channel.isActive)
    }

    func testIdleKeepAliveConnectionIsClosedSilently() throws {
        let channel = try makeChannel(idle: .milliseconds(50))
        try channel.writeInbound(ByteBuffer(string: "GET /healthz HTTP/1.1\r\n\r\n"))
        XCTAssertTrue(try output(channel).hasPrefix("HTTP/1.1 200 OK"))
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(100))
        XCTAssertEqual(try output(channel), "")
        XCTAssertFalse(channel.isActive)
    }
}

/// Counts the reads that reach the channel: the handler withholds them to apply back-pressure.
final class ReadCounter: ChannelOutboundHandler {
    typealias OutboundIn = Any
    var reads = 0
    func read(context: ChannelHandlerContext) {
        reads += 1
        context.read()
    }
}

/// Hostile clients through the real pipeline, byte for byte, on the embedded loop's virtual clock.
final class HardeningEmbeddedTests: XCTestCase {
    let reads = ReadCounter()

    func makeChannel(_ adjust: (inout HTTPHandlerSettings) -> Void = { _ in }) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        let api = HTTPFixture.api(link: FakeLink(HTTPFixture.snapshot()), system: RecordingSystemControl(),
                                  settings: InMemoryDeviceSettings())
        var settings = HTTPHandlerSettings(maxBodyBytes: 1024, lingerTime: .milliseconds(10))
        settings.runAfterReply = { $0() }
        adjust(&settings)
        try channel.pipeline.syncOperations.addHandler(reads)
        try APIServer.configureConnection(channel.pipeline.syncOperations, dispatcher: api.dispatcher(),
                                          setupPage: ByteBuffer(string: "<p>"), settings: settings)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return channel
    }

    func output(_ channel: EmbeddedChannel) throws -> String {
        var all = ""
        while let buf = try channel.readOutbound(as: ByteBuffer.self) { all += String(buffer: buf) }
        return all
    }

    func count(_ needle: String, in text: String) -> Int { text.components(separatedBy: needle).count - 1 }

    static let reading = post(#"{"cmd":"meter_reading"}"#)

    func setWritable(_ channel: EmbeddedChannel, _ writable: Bool) {
        channel.isWritable = writable
        channel.pipeline.fireChannelWritabilityChanged()
    }

    func testAClientThatDoesNotDrainGetsNoMoreRepliesAndNoMoreReads() throws {
        let channel = try makeChannel()
        try channel.writeInbound(ByteBuffer(string: Self.reading))
        XCTAssertEqual(count("HTTP/1.1 200 OK", in: try output(channel)), 1)
        channel.read()
        XCTAssertEqual(reads.reads, 1, "an idle connection reads")

        setWritable(channel, false)  // the socket's buffer is full: the client is not reading
        try channel.writeInbound(ByteBuffer(string: String(repeating: Self.reading, count: 5)))
        XCTAssertEqual(try output(channel), "", "no reply is produced while the client does not drain")
        channel.read()
        channel.read()
        XCTAssertEqual(reads.reads, 1, "and nothing more is read")

        setWritable(channel, true)
        let out = try output(channel)
        XCTAssertEqual(count("HTTP/1.1 200 OK", in: out), 5, "in order once it drains")
        XCTAssertEqual(reads.reads, 2, "the withheld read is let through")
        channel.read()
        XCTAssertEqual(reads.reads, 3)
        _ = try channel.finish()
    }

    func testBeyondTheQueueCapTheNextRequestIsBusyAfterTheQueuedOnesAndTheConnectionCloses() throws {
        let channel = try makeChannel { $0.limits.maxQueuedRequests = 2 }
        setWritable(channel, false)
        try channel.writeInbound(ByteBuffer(string: String(repeating: Self.reading, count: 6)))
        XCTAssertEqual(try output(channel), "")
        setWritable(channel, true)
        let out = try output(channel)
        XCTAssertEqual(count("HTTP/1.1 200 OK", in: out), 2, out)
        let busy = #"{"error":"busy","message":"more than 2 requests (or 65536 bytes) are waiting on this connection for their replies to be read: read the replies before sending more requests","result":"ERROR"}"#
        XCTAssertTrue(out.hasSuffix("HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: \(busy.utf8.count)\r\nconnection: close\r\nretry-after: 1\r\n\r\n\(busy)"), out)
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        XCTAssertFalse(channel.isActive)
    }

    func testATricklingHeadIs408AtItsDeadlineWhateverTheTrickle() throws {
        let channel = try makeChannel { $0.limits.headTimeout = .seconds(10); $0.limits.idleTimeout = .seconds(5) }
        let loop = channel.embeddedEventLoop
        loop.advanceTime(by: .seconds(3))  // idle, then the first byte
        for (i, byte) in "POST /api HTTP/1.1\r\n".enumerated() {
            try channel.writeInbound(ByteBuffer(string: String(byte)))
            loop.advanceTime(by: .seconds(1))  // well inside the 5 s between bytes
            if i < 9 { XCTAssertEqual(try output(channel), "", "byte \(i)") }
            if i == 9 { break }
        }
        let out = try output(channel)
        XCTAssertTrue(out.hasPrefix("HTTP/1.1 408 Request Timeout\r\n"), out)
        XCTAssertTrue(out.contains("connection: close\r\n"))
        loop.advanceTime(by: .seconds(1))
        XCTAssertFalse(channel.isActive)
    }

    func testATricklingAPIBodyIs408AtTheRequestDeadline() throws {
        let channel = try makeChannel { $0.limits.headTimeout = .seconds(10); $0.limits.idleTimeout = .seconds(5) }
        let loop = channel.embeddedEventLoop
        try channel.writeInbound(ByteBuffer(string: "POST /api HTTP/1.1\r\nContent-Length: 100\r\n\r\n"))
        for i in 0..<9 {
            loop.advanceTime(by: .seconds(1))
            try channel.writeInbound(ByteBuffer(string: " "))
            XCTAssertEqual(try output(channel), "", "second \(i + 1)")
        }
        loop.advanceTime(by: .seconds(1))
        let out = try output(channel)
        XCTAssertTrue(out.hasPrefix("HTTP/1.1 408 Request Timeout\r\n"), out)
    }

    func testAStuckClientIsClosedAfterTheWriteTimeout() throws {
        let channel = try makeChannel { $0.limits.writeTimeout = .seconds(3) }
        setWritable(channel, false)
        try channel.writeInbound(ByteBuffer(string: Self.reading))
        channel.embeddedEventLoop.advanceTime(by: .seconds(2))
        XCTAssertTrue(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .seconds(2))
        XCTAssertFalse(channel.isActive)
    }

    func testGetAPIAnswersLikeMeterReading() throws {
        let channel = try makeChannel()
        try channel.writeInbound(ByteBuffer(string: Self.reading))
        let posted = try output(channel)
        try channel.writeInbound(ByteBuffer(string: "GET /api HTTP/1.1\r\nHost: 192.168.0.158\r\n\r\n"))
        XCTAssertEqual(try output(channel), posted)
        try channel.writeInbound(ByteBuffer(string: "DELETE /api HTTP/1.1\r\n\r\n"))
        XCTAssertTrue(try output(channel).contains("allow: GET, HEAD, POST\r\n"))
        _ = try channel.finish()
    }

    func testTypographicQuotesAreNamed() throws {
        let channel = try makeChannel()
        let body = "{“cmd”:“meter_reading”}"  // the public client's README example, as rendered
        try channel.writeInbound(ByteBuffer(string: "POST /api HTTP/1.1\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"))
        let json = #"{"error":"invalid_json","message":"the body is not valid JSON: it contains typographic quotes (“ ”); use straight double quotes (\") around names and strings","result":"ERROR"}"#
        XCTAssertEqual(try output(channel),
                       "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: \(json.utf8.count)\r\n\r\n\(json)")
        try channel.writeInbound(ByteBuffer(string: post(#"{"cmd":"meter_rea"#)))
        XCTAssertTrue(try output(channel).hasSuffix(#"{"error":"invalid_json","message":"the body is not valid JSON","result":"ERROR"}"#))
        _ = try channel.finish()
    }
}
