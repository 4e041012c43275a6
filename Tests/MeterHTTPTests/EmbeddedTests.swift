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
        try APIServer.configureConnection(
            channel.pipeline.syncOperations, dispatcher: api.dispatcher(), setupPage: ByteBuffer(string: "<p>"),
            settings: HTTPHandlerSettings(maxBodyBytes: 64, lingerTime: .milliseconds(10)), idleTimeout: idle)
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
        // IdleStateHandler compares against the real clock: let real time pass, then run the timers.
        usleep(100_000)
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
        usleep(100_000)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(100))
        XCTAssertEqual(try output(channel), "")
        XCTAssertFalse(channel.isActive)
    }
}
