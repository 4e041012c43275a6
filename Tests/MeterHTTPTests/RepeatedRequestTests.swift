import KPM33B
@testable import MeterHTTP
import MeterService
import MeterTestSupport
import NIOCore
import NIOEmbedded
import NIOHTTP1
import XCTest

/// Issue 18: the byte-level fast path in front of NIO's decoder (`RepeatedRequest`, `ByteTapHandler`). A read that
/// is exactly the last request answered from `PreEncodedReplies` gets the same bytes the normal path would write;
/// anything else goes through the decoder as before; the connection machine counts every request.
final class RepeatedRequestTests: XCTestCase {
    struct Setup {
        let channel: EmbeddedChannel
        let link: FakeLink
        let api: MeterAPI
        let handler: APIHTTPHandler
    }

    func makeChannel(preEncoded: Bool, link: FakeLink? = nil, maxBodyBytes: Int = 1024,
                     access: AccessSettings = .strict) throws -> Setup {
        let channel = EmbeddedChannel()
        let link = link ?? FakeLink(HTTPFixture.snapshot())
        let api = HTTPFixture.api(link: link, system: RecordingSystemControl(), settings: InMemoryDeviceSettings())
        var settings = HTTPHandlerSettings(maxBodyBytes: maxBodyBytes, lingerTime: .milliseconds(10), access: access)
        settings.preEncoded = preEncoded ? PreEncodedReplies(version: { [api] in api.meterReadingVersion() }) : nil
        try APIServer.configureConnection(
            channel.pipeline.syncOperations, dispatcher: api.dispatcher(), setupPage: ByteBuffer(string: "<p>"),
            settings: settings)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        let handler = try channel.pipeline.syncOperations.handler(type: APIHTTPHandler.self)
        return Setup(channel: channel, link: link, api: api, handler: handler)
    }

    /// Each string is one read; everything written back.
    func exchange(_ channel: EmbeddedChannel, _ reads: String...) throws -> String {
        try exchange(channel, reads)
    }

    func exchange(_ channel: EmbeddedChannel, _ reads: [String]) throws -> String {
        for read in reads { try channel.writeInbound(ByteBuffer(string: read)) }
        var all = ""
        while let buf = try channel.readOutbound(as: ByteBuffer.self) { all += String(buffer: buf) }
        return all
    }

    static let request = PreEncodedTests.post(PreEncodedTests.reading)

    func testRepeatedRequestGetsTheNormalPathsBytesWithoutTheDecoder() throws {
        let plain = try makeChannel(preEncoded: false)
        let fast = try makeChannel(preEncoded: true)
        let get = "GET /api HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        for request in [Self.request, get] {
            let expected = try exchange(plain.channel, request)
            XCTAssertTrue(expected.hasPrefix("HTTP/1.1 200 OK\r\n"), expected)
            for _ in 0..<3 { XCTAssertEqual(try exchange(fast.channel, request), expected) }
        }
        XCTAssertEqual(fast.handler.repeatedAnswers, 4, "the first of each is learnt, the two after it repeated")
        XCTAssertEqual(fast.handler.requestCount, 6, "the connection machine counts every request")
        XCTAssertEqual(plain.handler.repeatedAnswers, 0)
        _ = try plain.channel.finish()
        _ = try fast.channel.finish()
    }

    /// After the request was learnt, each variant must get exactly what the normal path answers, through the
    /// decoder; the identical request after it must still be answered right.
    func testEveryOtherReadGoesThroughTheDecoder() throws {
        let half = Self.request.utf8.count / 2
        let first = String(Self.request.prefix(half)), rest = String(Self.request.dropFirst(half))
        let variants: [(String, [String])] = [
            ("another id", [PreEncodedTests.post(#"{"cmd":"meter_reading","id":2}"#)]),
            ("one header byte", [Self.request.replacingOccurrences(of: "Host: 127.0.0.1", with: "Host: 127.0.0.2")]),
            ("split across reads", [first, rest]),
            ("two pipelined in one read", [Self.request + Self.request]),
            ("one and a half in one read", [Self.request + first, rest]),
            // The second `rest` alone is not a request: it must not be mistaken for one learnt from the first.
            ("the rest of a request, twice", [Self.request + first, rest, rest]),
            ("HEAD", ["HEAD /api HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"]),
            ("HTTP/1.0", [Self.request.replacingOccurrences(of: "HTTP/1.1", with: "HTTP/1.0")]),
            ("Connection: close", [PreEncodedTests.post(PreEncodedTests.reading, extraHeaders: "Connection: close\r\n")]),
            ("Expect: 100-continue", [PreEncodedTests.post(PreEncodedTests.reading, extraHeaders: "Expect: 100-continue\r\n")]),
            ("another command", [PreEncodedTests.post(#"{"cmd":"system_status","id":1}"#)]),
            ("a body over the limit", [PreEncodedTests.post(String(repeating: " ", count: 64) + PreEncodedTests.reading)]),
            ("a bad request", ["NOT HTTP\r\n\r\n"]),
        ]
        for (name, reads) in variants {
            let plain = try makeChannel(preEncoded: false, maxBodyBytes: 64)
            let fast = try makeChannel(preEncoded: true, maxBodyBytes: 64)
            _ = try exchange(fast.channel, Self.request)  // learnt
            _ = try exchange(plain.channel, Self.request)
            let expected = try exchange(plain.channel, reads)
            XCTAssertEqual(try exchange(fast.channel, reads), expected, name)
            XCTAssertEqual(fast.handler.repeatedAnswers, 0, name)
            let again = try exchange(plain.channel, Self.request)
            XCTAssertEqual(try exchange(fast.channel, Self.request), again, "\(name): the identical request after it")
            _ = try? plain.channel.finish()
            _ = try? fast.channel.finish()
        }
    }

    /// Requests the normal path answers with more than the pre-encoded response are never learnt: sent again, they
    /// get what the normal path writes.
    func testRequestsAnsweredWithMoreThanTheResponseAreNotLearnt() throws {
        let body = PreEncodedTests.reading
        let requests = [
            PreEncodedTests.post(body, extraHeaders: "Expect: 100-continue\r\n"),
            "POST /api HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                + String(body.utf8.count, radix: 16) + "\r\n\(body)\r\n0\r\n\r\n",
        ]
        for request in requests {
            let plain = try makeChannel(preEncoded: false)
            let fast = try makeChannel(preEncoded: true)
            for _ in 0..<3 { XCTAssertEqual(try exchange(fast.channel, request), try exchange(plain.channel, request), request) }
            XCTAssertEqual(fast.handler.repeatedAnswers, 0, request)
            _ = try? plain.channel.finish()
            _ = try? fast.channel.finish()
        }
    }

    func testLearntOnlyFromAReadThatWasExactlyOneRequest() throws {
        let fast = try makeChannel(preEncoded: true)
        let half = Self.request.utf8.count / 2
        // Split: the decoder answered it, but the read was not the whole request: nothing is learnt.
        _ = try exchange(fast.channel, String(Self.request.prefix(half)), String(Self.request.dropFirst(half)))
        _ = try exchange(fast.channel, Self.request + Self.request)
        XCTAssertEqual(fast.handler.repeatedAnswers, 0)
        // The decoder may hold part of a request after such a read, and nothing tells when it holds none again: this
        // connection stays on the normal path.
        _ = try exchange(fast.channel, Self.request + String(Self.request.prefix(half)))
        _ = try exchange(fast.channel, String(Self.request.dropFirst(half)))
        for _ in 0..<3 { _ = try exchange(fast.channel, Self.request) }
        XCTAssertEqual(fast.handler.repeatedAnswers, 0)
        XCTAssertEqual(fast.handler.requestCount, 8)
        _ = try fast.channel.finish()
        // A new connection: one read, one request, from a boundary: learnt, then repeated.
        let fresh = try makeChannel(preEncoded: true)
        for _ in 0..<3 { _ = try exchange(fresh.channel, Self.request) }
        XCTAssertEqual(fresh.handler.repeatedAnswers, 2)
        _ = try fresh.channel.finish()
    }

    func testANewReadingIsEncodedAgainAndThenRepeated() throws {
        let fast = try makeChannel(preEncoded: true)
        let before = try exchange(fast.channel, Self.request)
        _ = try exchange(fast.channel, Self.request)
        fast.link.state.withLock { s in
            s.generation += 1
            var basic = s.basic!
            basic[0] = 231.0
            s.basic = basic
        }
        let after = try exchange(fast.channel, Self.request)
        XCTAssertNotEqual(before, after)
        XCTAssertTrue(after.contains("\"2310\""), after)
        XCTAssertEqual(try exchange(fast.channel, Self.request), after)
        let plain = try makeChannel(preEncoded: false, link: fast.link)
        XCTAssertEqual(after, try exchange(plain.channel, Self.request))
        XCTAssertEqual(fast.api.meterReadingEncodeCount, 2)
        XCTAssertEqual(fast.handler.repeatedAnswers, 2, "one before and one after the new reading")
        _ = try fast.channel.finish()
        _ = try plain.channel.finish()
    }

    func testAProtectedMeterReadingIsNeverRepeated() throws {
        let access = AccessSettings(
            authorizer: CommandAuthorizer(tokenRequired: true, protectedCommands: ["meter_reading"],
                                          tokenIsValid: { $0 == "secret" }),
            arrivedOnOpenSetupAccessPoint: { _ in false })
        let fast = try makeChannel(preEncoded: true, access: access)
        let request = PreEncodedTests.post(PreEncodedTests.reading, extraHeaders: "Authorization: Bearer secret\r\n")
        for _ in 0..<3 { XCTAssertTrue(try exchange(fast.channel, request).hasPrefix("HTTP/1.1 200 OK\r\n")) }
        XCTAssertEqual(fast.handler.repeatedAnswers, 0, "its answer depends on the token, not only on the bytes")
        _ = try fast.channel.finish()
    }

    /// The recogniser alone: a request is learnt only when the read began with nothing queued or outstanding in the
    /// connection machine (an answer during the read could otherwise be an earlier request's).
    func testLearntOnlyWhenTheAnswerCanOnlyBeThisReadsRequest() {
        let bytes = ByteBuffer(string: Self.request)
        let head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/api",
                                   headers: ["content-length": "\(PreEncodedTests.reading.utf8.count)"])
        let response = ByteBuffer(string: "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        for machineAtBoundary in [false, true] {
            var r = RepeatedRequest()
            r.readBegan(bytes, machineAtBoundary: machineAtBoundary)
            r.decoded(.head(head))
            r.decoded(.body(ByteBuffer(string: PreEncodedTests.reading)))
            r.decoded(.end(nil))
            r.answeredPreEncoded(key: Array(PreEncodedTests.reading.utf8), response: response,
                                 version: ReadingVersion(generation: 1, status: nil))
            r.readEnded()
            XCTAssertTrue(r.atBoundary)
            XCTAssertEqual(r.matches(bytes), machineAtBoundary)
        }
    }

    func testOneRequestIsExactlyAHeadOfCRLFLinesAndItsBody() {
        func check(_ s: String, _ body: Int) -> Bool { RepeatedRequest.isOneRequest(ByteBuffer(string: s), bodyBytes: body) }
        XCTAssertTrue(check("GET / HTTP/1.1\r\nHost: a\r\n\r\n", 0))
        XCTAssertTrue(check("POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", 2))
        XCTAssertFalse(check("POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}G", 2), "a byte after the body")
        XCTAssertFalse(check("POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n{", 2), "a byte short")
        XCTAssertFalse(check("GET / HTTP/1.1\nHost: a\r\n\r\n", 0), "a bare LF")
        XCTAssertFalse(check("\r\nGET / HTTP/1.1\r\n\r\n", 0), "an empty line before the request line")
        XCTAssertFalse(check("GET / HTTP/1.1\r\nHost: a\r\n", 0), "no end of head")
    }
}
