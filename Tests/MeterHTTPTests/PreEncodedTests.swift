import KPM33B
@testable import MeterHTTP
import MeterService
import MeterTestSupport
import NIOCore
import NIOEmbedded
import XCTest

/// Issue 18: `meter_reading` answered from a complete pre-encoded response. The bytes must be exactly what the
/// dispatcher and NIO's `HTTPResponseEncoder` write; a new reading must be encoded again; nothing else is cached.
final class PreEncodedTests: XCTestCase {
    struct Setup {
        let channel: EmbeddedChannel
        let link: FakeLink
        let api: MeterAPI
        let replies: PreEncodedReplies?
    }

    func makeChannel(preEncoded: Bool, link: FakeLink? = nil) throws -> Setup {
        let channel = EmbeddedChannel()
        let link = link ?? FakeLink(HTTPFixture.snapshot())
        let api = HTTPFixture.api(link: link, system: RecordingSystemControl(), settings: InMemoryDeviceSettings())
        var settings = HTTPHandlerSettings(maxBodyBytes: 1024, lingerTime: .milliseconds(10))
        let replies = preEncoded ? PreEncodedReplies(version: { [api] in api.meterReadingVersion() }) : nil
        settings.preEncoded = replies
        try APIServer.configureConnection(
            channel.pipeline.syncOperations, dispatcher: api.dispatcher(), setupPage: ByteBuffer(string: "<p>"),
            settings: settings)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return Setup(channel: channel, link: link, api: api, replies: replies)
    }

    func exchange(_ channel: EmbeddedChannel, _ request: String) throws -> String {
        try channel.writeInbound(ByteBuffer(string: request))
        var all = ""
        while let buf = try channel.readOutbound(as: ByteBuffer.self) { all += String(buffer: buf) }
        return all
    }

    static func post(_ body: String, extraHeaders: String = "") -> String {
        "POST /api HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\(extraHeaders)"
            + "Content-Length: \(body.utf8.count)\r\n\r\n\(body)"
    }

    static let reading = #"{"cmd":"meter_reading","id":1}"#

    func testPreEncodedResponseEqualsTheEncodersBytes() throws {
        let plain = try makeChannel(preEncoded: false)
        let fast = try makeChannel(preEncoded: true)
        for request in [Self.post(Self.reading), Self.post(#"{"cmd":"meter_reading","id":"abc"}"#),
                        Self.post(#" { "id" : 7 , "cmd" : "meter_reading" } "#),
                        "GET /api HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"] {
            let expected = try exchange(plain.channel, request)
            XCTAssertTrue(expected.hasPrefix("HTTP/1.1 200 OK\r\n"), expected)
            let first = try exchange(fast.channel, request)  // builds the entry
            let second = try exchange(fast.channel, request)  // served from it
            XCTAssertEqual(first, expected)
            XCTAssertEqual(second, expected)
        }
        XCTAssertEqual(fast.replies?.count, 4, "one entry per distinct request body")
        XCTAssertEqual(fast.api.meterReadingEncodeCount, 1, "one reading, encoded once")
        _ = try plain.channel.finish()
        _ = try fast.channel.finish()
    }

    func testSecondIdenticalRequestDoesNotReachTheDispatcher() throws {
        let fast = try makeChannel(preEncoded: true)
        _ = try exchange(fast.channel, Self.post(Self.reading))
        let version = fast.api.meterReadingVersion()
        XCTAssertNotNil(fast.replies?.lookup(Array(Self.reading.utf8), version: version))
        // The entry is what answers: replace its bytes and the next request with the same body gets exactly them
        // (other head bytes, so it goes through the decoder and not through the connection's fast path).
        let marker = PreEncodedReplies.encode(status: .ok, body: Array(#"{"marker":1}"#.utf8))
        _ = fast.replies?.store(request: Array(Self.reading.utf8), version: version, status: 200,
                                body: Array(#"{"marker":1}"#.utf8))
        XCTAssertEqual(try exchange(fast.channel, Self.post(Self.reading, extraHeaders: "X-Other: 1\r\n")),
                       String(buffer: marker))
        _ = try fast.channel.finish()
    }

    func testNewReadingIsEncodedAgainAndServed() throws {
        let fast = try makeChannel(preEncoded: true)
        let before = try exchange(fast.channel, Self.post(Self.reading))
        fast.link.state.withLock { s in
            s.generation += 1
            var basic = s.basic!
            basic[0] = 231.0
            s.basic = basic
        }
        let after = try exchange(fast.channel, Self.post(Self.reading))
        XCTAssertNotEqual(before, after)
        XCTAssertTrue(after.contains("\"2310\""), after)
        let plain = try makeChannel(preEncoded: false, link: fast.link)
        XCTAssertEqual(after, try exchange(plain.channel, Self.post(Self.reading)))
        XCTAssertEqual(fast.api.meterReadingEncodeCount, 2)
        _ = try fast.channel.finish()
        _ = try plain.channel.finish()
    }

    func testDuplicateKeysAnswerAsTheDispatcherReadsThem() throws {
        let request = Self.post(#"{"cmd":"meter_reading","cmd":"system_status"}"#)
        let fast = try makeChannel(preEncoded: true)
        let plain = try makeChannel(preEncoded: false)
        let expected = try exchange(plain.channel, request)
        XCTAssertEqual(try exchange(fast.channel, request), expected)
        XCTAssertEqual(try exchange(fast.channel, request), expected)
        _ = try? plain.channel.finish()
        _ = try? fast.channel.finish()
    }

    func testOnlyKeepAliveMeterReadingIsCached() throws {
        let others = [
            Self.post(#"{"cmd":"system_status","x":"meter_reading"}"#),
            Self.post(#"{"cmd":"meter_reading"}"#, extraHeaders: "Connection: close\r\n"),
            "POST /api HTTP/1.0\r\nContent-Length: 23\r\n\r\n{\"cmd\":\"meter_reading\"}",
            "HEAD /api HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
            Self.post(#"{"cmd":"meter_reading""#),
        ]
        for request in others {
            let fast = try makeChannel(preEncoded: true)
            let plain = try makeChannel(preEncoded: false)
            XCTAssertEqual(try exchange(fast.channel, request), try exchange(plain.channel, request), request)
            XCTAssertEqual(fast.replies?.count, 0, request)
            _ = try? plain.channel.finish()
            _ = try? fast.channel.finish()
        }
    }
}
