#if canImport(Glibc)
import Glibc
#endif
import FoundationEssentials
import KPM33B
@testable import MeterHTTP
import MeterService
import NIOCore
import XCTest

/// Real HTTP over loopback against an in-process server.
final class LoopbackTests: XCTestCase {
    var running: HTTPFixture.Running!

    override func setUp() async throws {
        running = try await HTTPFixture.start {
            $0.idleTimeout = .milliseconds(400); $0.headTimeout = .milliseconds(400); $0.lingerTime = .milliseconds(200)
        }
    }

    override func tearDown() async throws {
        try await running.server.stop()
    }

    var port: Int { running.port }

    /// `curl -i -X POST -d '<body>' http://127.0.0.1:PORT/api`, exactly as the description writes it.
    func curl(_ body: String) -> (status: Int, contentType: String, body: String) {
        let escaped = body.split(separator: "'", omittingEmptySubsequences: false).joined(separator: #"'\''"#)
        let out = shell("curl -s -i -X POST -d '\(escaped)' http://127.0.0.1:\(port)/api")
        let parts = out.split(separator: "\r\n\r\n", maxSplits: 1, omittingEmptySubsequences: false)
        let head = parts.first.map(String.init) ?? ""
        let status = Int(head.split(separator: " ").dropFirst().first ?? "") ?? 0
        let type = head.split(separator: "\r\n").first { $0.lowercased().hasPrefix("content-type:") }
            .map { String($0.dropFirst("content-type:".count).drop(while: { $0 == " " })) } ?? ""
        return (status, type, parts.count > 1 ? String(parts[1]) : "")
    }

    func assertServing(file: StaticString = #filePath, line: UInt = #line) throws {
        let c = try RawClient(port: port)
        c.send(post(#"{"cmd":"meter_reading","id":0}"#))
        let r = try XCTUnwrap(c.readResponse(), "service stopped answering", file: file, line: line)
        XCTAssertEqual(r.status, 200, file: file, line: line)
        XCTAssertTrue(r.text.hasSuffix(#""result":"OK","id":0}"#), r.text, file: file, line: line)
    }

    // MARK: golden tests: the description's examples, sent the way it sends them

    func testGoldenExamplesWithoutAndWithID() throws {
        let ok = #"{"result":"OK"}"#
        let notAvailable = { (cmd: String) in
            #"{"error":"not_available","message":"'\#(cmd)' is not available on this firmware yet","result":"ERROR"}"#
        }
        let examples: [(String, Int, String)] = [
            (#"{"cmd":"wifi_status"}"#, 501, notAvailable("wifi_status")),
            (#"{"cmd":"wifi_config","ssid":"????????","password":"????????","mode":"????????"}"#, 501, notAvailable("wifi_config")),
            (#"{"cmd":"firmware_update","firmware_uri":"http://192.168.2.228:8001/welink.bin","cert":"ca_cert.pem"}"#, 501,
             notAvailable("firmware_update")),
            (#"{"cmd":"download_file","file_uri":"http://192.168.2.228:8001/test.txt","cert":"ca_cert.pem"}"#, 501,
             notAvailable("download_file")),
            (#"{"cmd":"request_post","file_uri":"http://192.168.2.47:80/api","message":"????????","cert":"ca_cert.pem"}"#,
             501, notAvailable("request_post")),
            (#"{"cmd":"system_restart"}"#, 200, ok),
            (#"{"cmd":"meter_factreset"}"#, 200, ok),
            (#"{"cmd":"get_ip_info"}"#, 200,
             #"{"GW":"192.168.0.1","IP":"192.168.0.158","Net Mask":"255.255.255.0","interface":"eth0","result":"OK"}"#),
            (#"{"cmd": "meter_setkey", "key": "xxxxx"}"#, 400,
             #"{"error":"invalid_key","message":"field 'key' must be 32 hexadecimal characters (an AES-128 key), got 5 characters","result":"ERROR"}"#),
            (#"{"cmd":"coffee"}"#, 200, #"{"error":"unkown_cmd","message":"unknown command 'coffee'","result":"ERROR"}"#),
        ]
        for (request, status, expected) in examples {
            let plain = curl(request)
            XCTAssertEqual(plain.status, status, request)
            XCTAssertEqual(plain.contentType, "application/json", request)
            XCTAssertEqual(plain.body, expected, request)

            let withID = String(request.dropLast()) + #","id":"123"}"#
            let r = curl(withID)
            XCTAssertEqual(r.status, status, withID)
            XCTAssertEqual(r.body, String(expected.dropLast()) + #","id":"123"}"#, withID)
        }
        // Answer first, then act: both acted once per request, after their replies went out (on the after-reply
        // queue, so give it a moment).
        for _ in 0..<500 where running.system.restarts < 2 || running.settings.factoryResets < 2 { usleep(10_000) }
        XCTAssertEqual(running.system.restarts, 2)
        XCTAssertEqual(running.settings.factoryResets, 2)
    }

    func testGoldenMeterReadingAndStatus() throws {
        let r = curl(#"{"cmd": "meter_reading"}"#)
        XCTAssertEqual(r.status, 200)
        let first = #"{"meter":[{"data":[{"OBIS":"1-0:32.7.0.255","entry":[{"ts":"1722007035","val":"2358"}],"scale":"-1","unit":"35"},"#
        XCTAssertTrue(r.body.hasPrefix(first), r.body)
        XCTAssertTrue(r.body.hasSuffix(#""meterid":"33B0087654321","status":"online"}],"result":"OK"}"#), r.body)
        XCTAssertTrue(r.body.contains(#"{"OBIS":"1-0:2.7.0.255","entry":[{"ts":"1722007035","val":"1500"}],"scale":"0","unit":"27"}"#))
        XCTAssertTrue(r.body.contains(#"{"OBIS":"1-0:1.8.0.255","entry":[{"ts":"1722007035","val":"1234567"}],"scale":"0","unit":"30"}"#))

        let withID = curl(#"{"cmd":"meter_reading","id":"123"}"#)
        XCTAssertEqual(withID.body, String(r.body.dropLast()) + #","id":"123"}"#)

        let status = curl(#"{"cmd":"system_status","id":"123"}"#)
        XCTAssertEqual(status.status, 200)
        XCTAssertTrue(status.body.hasPrefix(#"{"hw-version":"test","#), status.body)
        XCTAssertTrue(status.body.contains(#""model":"MeterExtension #1 (meterext KPM33B)","#))
        XCTAssertTrue(status.body.contains(#""mac":"b8:27:eb:00:00:01","meter_link":"online","#))
        XCTAssertTrue(status.body.contains(#""result":"OK","sw-version":"0.9.0","sys-ts":"1722007040","uptime":""#), status.body)
        XCTAssertTrue(status.body.hasSuffix(#"","id":"123"}"#), status.body)
    }

    /// The Home Assistant integration: JSON content type, numeric id 0, values by position.
    func testHomeAssistantStyleClient() throws {
        struct Reading: Decodable {
            struct Meter: Decodable { var meterid: String; var data: [Entry] }
            struct Entry: Decodable { var OBIS: String; var entry: [Sample] }
            struct Sample: Decodable { var val: String }
            var meter: [Meter]
        }
        let c = try RawClient(port: port)
        for _ in 0..<3 {  // keep-alive: same connection
            c.send(post(#"{"cmd": "meter_reading","id": 0}"#))
            let r = try XCTUnwrap(c.readResponse())
            XCTAssertEqual(r.status, 200)
            XCTAssertEqual(r.header("content-type"), "application/json")
            XCTAssertNil(r.header("connection"))
            let m = try decodeJSON(Reading.self, r.body).meter[0]
            XCTAssertEqual(m.meterid, HTTPFixture.serial)
            XCTAssertEqual(Double(m.data[8].entry[0].val)! / 1000, 1234.567, accuracy: 0.001)
            XCTAssertEqual(m.data[0].entry[0].val, "2358")
            XCTAssertEqual(m.data[3].entry[0].val, "512")
            XCTAssertTrue(r.text.hasSuffix(#","id":0}"#))
        }
    }

    func testSetupPageAndHealth() throws {
        let c = try RawClient(port: port)
        c.send("GET / HTTP/1.1\r\nHost: 192.168.0.158\r\n\r\n")
        let page = try XCTUnwrap(c.readResponse())
        XCTAssertEqual(page.status, 200)
        XCTAssertEqual(page.header("content-type"), "text/html; charset=utf-8")
        XCTAssertEqual(page.text, HTTPFixture.html)
        c.send("GET /healthz HTTP/1.1\r\nHost: 192.168.0.158\r\n\r\n")
        let health = try XCTUnwrap(c.readResponse())
        XCTAssertEqual(health.status, 200)
        XCTAssertTrue(health.text.hasPrefix(#"{"meter_link":"online","result":"OK","uptime":""#), health.text)
    }

    // MARK: bad input

    func testWrongMethodAndUnknownPathKeepTheConnection() throws {
        let c = try RawClient(port: port)
        c.send("GET /api HTTP/1.1\r\nHost: 192.168.0.158\r\n\r\n")
        XCTAssertEqual(c.readResponse()?.status, 200, "a browser opening /api gets the reading")
        c.send("DELETE /api HTTP/1.1\r\nHost: 192.168.0.158\r\n\r\n")
        let get = try XCTUnwrap(c.readResponse())
        XCTAssertEqual(get.status, 405)
        XCTAssertEqual(get.header("allow"), "GET, HEAD, POST")
        XCTAssertEqual(try decodeJSON(ErrorBody.self, get.body).error, "method_not_allowed")
        c.send("PUT / HTTP/1.1\r\nHost: 192.168.0.158\r\nContent-Length: 3\r\n\r\nabc")
        XCTAssertEqual(c.readResponse()?.header("allow"), "GET, HEAD")
        c.send("POST /nope HTTP/1.1\r\nHost: 192.168.0.158\r\nContent-Length: 2\r\n\r\n{}")
        let missing = try XCTUnwrap(c.readResponse())
        XCTAssertEqual(missing.status, 404)
        XCTAssertEqual(try decodeJSON(ErrorBody.self, missing.body).error, "not_found")
        c.send(post(#"{"cmd":"meter_reading"}"#))
        XCTAssertEqual(c.readResponse()?.status, 200)
    }

    func testMalformedJSONAndWrongTypes() throws {
        let c = try RawClient(port: port)
        for (body, code) in [(#"{"cmd":"meter_rea"#, "invalid_json"), (#"{"cmd":1}"#, "wrong_type"),
                             (#"{"cmd":"meter_reading","id":{"a":1}}"#, "wrong_type"), ("", "invalid_json")] {
            c.send(post(body))
            let r = try XCTUnwrap(c.readResponse(), body)
            XCTAssertEqual(r.status, 400, body)
            XCTAssertEqual(try decodeJSON(ErrorBody.self, r.body).error, code, body)
            XCTAssertEqual(try decodeJSON(ErrorBody.self, r.body).result, "ERROR")
        }
        try assertServing()
    }

    func testOneMebibyteBodyIs413AndClosed() throws {
        let c = try RawClient(port: port)
        let body = String(repeating: "x", count: 1 << 20)
        c.send(Array("POST /api HTTP/1.1\r\nHost: 192.168.0.158\r\nContent-Length: \(body.utf8.count)\r\n\r\n".utf8))
        c.send(Array(body.utf8))  // may fail half-way once the server shut its side: fine
        let r = try XCTUnwrap(c.readResponse())
        XCTAssertEqual(r.status, 413)
        XCTAssertEqual(r.header("connection"), "close")
        XCTAssertEqual(try decodeJSON(ErrorBody.self, r.body).error, "body_too_large")
        XCTAssertTrue(c.isClosedByPeer())
        try assertServing()

        // Chunked, no length announced: the cap applies while collecting.
        let chunked = try RawClient(port: port)
        chunked.send("POST /api HTTP/1.1\r\nHost: 192.168.0.158\r\nTransfer-Encoding: chunked\r\n\r\n")
        let chunk = String(repeating: "y", count: 8192)
        for _ in 0..<4 { chunked.send("2000\r\n\(chunk)\r\n") }
        XCTAssertEqual(chunked.readResponse()?.status, 413)
        try assertServing()

        // curl announces the size and waits for 100-continue: it gets the 413 without sending the body.
        let out = shell("head -c 1048576 /dev/zero | tr '\\0' 'a' | curl -s -o /dev/null -w '%{http_code}' -X POST --data-binary @- http://127.0.0.1:\(port)/api")
        XCTAssertEqual(out, "413")
        try assertServing()
    }

    func testBinaryJunkIs400AndClosed() throws {
        let c = try RawClient(port: port)
        c.send([0x16, 0x03, 0x01, 0x00, 0xA5, 0x01, 0x00, 0x00, 0xA1, 0x03, 0x03] + Array(repeating: 0xFF, count: 64)
               + [13, 10, 13, 10])
        let r = try XCTUnwrap(c.readResponse())
        XCTAssertEqual(r.status, 400)
        XCTAssertEqual(try decodeJSON(ErrorBody.self, r.body).error, "bad_request")
        XCTAssertTrue(c.isClosedByPeer())
        try assertServing()
    }

    func testHalfSentRequestTimesOut() throws {
        let started = ContinuousClock.now
        let c = try RawClient(port: port)
        c.send("POST /api HTTP/1.1\r\nHost: 192.168.0.158\r\nContent-Length: 40\r\n\r\n{\"cmd\":")
        let r = try XCTUnwrap(c.readResponse())
        XCTAssertEqual(r.status, 408)
        XCTAssertEqual(try decodeJSON(ErrorBody.self, r.body).error, "request_timeout")
        XCTAssertTrue(c.isClosedByPeer())
        XCTAssertLessThan(ContinuousClock.now - started, .seconds(3))

        let lineOnly = try RawClient(port: port)
        lineOnly.send("POST /a")
        XCTAssertEqual(lineOnly.readResponse()?.status, 408)

        let idle = try RawClient(port: port)  // says nothing: closed without a reply
        XCTAssertTrue(idle.isClosedByPeer())
        XCTAssertNil(idle.readResponse())
        try assertServing()
    }

    func testManyParallelConnections() throws {
        // From ten loopback addresses: one address alone may hold 32.
        let clients = try (0..<200).map { try RawClient(port: port, source: "127.0.1.\($0 / 20 + 1)", receiveTimeout: 10) }
        for (i, c) in clients.enumerated() { c.send(post(#"{"cmd":"meter_reading","id":\#(i)}"#)) }
        for (i, c) in clients.enumerated() {
            let r = try XCTUnwrap(c.readResponse(), "client \(i)")
            XCTAssertEqual(r.status, 200)
            XCTAssertTrue(r.text.hasSuffix(#","id":\#(i)}"#))
        }
        try assertServing()
    }

    func testPipelinedRequestsAnswerInOrderAcrossAsyncCommands() throws {
        let c = try RawClient(port: port)
        c.send(post(#"{"cmd":"relay_set","state":"off","id":1}"#) + post(#"{"cmd":"relay_status","id":2}"#)
               + post(#"{"cmd":"coffee","id":3}"#))
        let a = try XCTUnwrap(c.readResponse())
        let b = try XCTUnwrap(c.readResponse())
        let d = try XCTUnwrap(c.readResponse())
        XCTAssertTrue(a.text.hasSuffix(#""result":"OK","state":"off","ts":"1722007040","id":1}"#), a.text)
        XCTAssertTrue(b.text.contains(#""state":"off""#) && b.text.hasSuffix(#","id":2}"#), b.text)
        XCTAssertTrue(d.text.contains("unkown_cmd") && d.text.hasSuffix(#","id":3}"#), d.text)
    }

    func testHTTP10ClosesUnlessKeepAlive() throws {
        let c = try RawClient(port: port)
        c.send("POST /api HTTP/1.0\r\nContent-Length: 23\r\n\r\n{\"cmd\":\"meter_reading\"}")
        let r = try XCTUnwrap(c.readResponse())
        XCTAssertEqual(r.status, 200)
        XCTAssertTrue(c.isClosedByPeer())
    }
}

final class ServerLifecycleTests: XCTestCase {
    func testPortZeroReadyLivenessAndStop() async throws {
        let running = try await HTTPFixture.start { $0.livenessInterval = .milliseconds(50) }
        let address = try await running.server.ready.get()
        XCTAssertEqual(address.port, running.port)
        XCTAssertEqual(running.server.localPort, running.port)
        XCTAssertNotEqual(running.port, 0)
        try await Task.sleep(for: .milliseconds(200))
        XCTAssertTrue(running.server.isAlive(within: .milliseconds(150)))
        try await running.server.stop()
        XCTAssertThrowsError(try RawClient(port: running.port))
    }

    func testConnectionCap() async throws {
        let running = try await HTTPFixture.start { $0.maxConnections = 3; $0.lingerTime = .milliseconds(100) }
        defer { Task { try await running.server.stop() } }
        let held = try (0..<3).map { _ in try RawClient(port: running.port) }
        // Make sure the three are accepted before the fourth arrives.
        for c in held { c.send(post(#"{"cmd":"meter_reading"}"#)); XCTAssertEqual(c.readResponse()?.status, 200) }
        let extra = try RawClient(port: running.port)
        extra.send(post(#"{"cmd":"meter_reading"}"#))
        let r = try XCTUnwrap(extra.readResponse())
        XCTAssertEqual(r.status, 503)
        XCTAssertEqual(try decodeJSON(ErrorBody.self, r.body).error, "too_many_connections")
        XCTAssertTrue(extra.isClosedByPeer())
        // The held ones still work.
        held[0].send(post(#"{"cmd":"meter_reading"}"#))
        XCTAssertEqual(held[0].readResponse()?.status, 200)
    }

    func testOneAddressCannotTakeEverySlot() async throws {
        let running = try await HTTPFixture.start {
            $0.maxConnections = 8; $0.maxConnectionsPerPeer = 3; $0.lingerTime = .milliseconds(100)
        }
        defer { Task { try await running.server.stop() } }
        let held = try (0..<3).map { _ in try RawClient(port: running.port) }
        for c in held { c.send(post(#"{"cmd":"meter_reading"}"#)); XCTAssertEqual(c.readResponse()?.status, 200) }
        let extra = try RawClient(port: running.port)
        extra.send(post(#"{"cmd":"meter_reading"}"#))
        let r = try XCTUnwrap(extra.readResponse())
        XCTAssertEqual(r.status, 503)
        XCTAssertEqual(try decodeJSON(ErrorBody.self, r.body).message,
                       "too many connections from your address; close some and try again")
        XCTAssertTrue(extra.isClosedByPeer())
        // Another loopback address is another peer: served.
        let other = try RawClient(port: running.port, source: "127.0.0.2")
        other.send(post(#"{"cmd":"meter_reading"}"#))
        XCTAssertEqual(other.readResponse()?.status, 200)
        // A closed slot is free again.
        held[0].send("GET /healthz HTTP/1.0\r\n\r\n")
        XCTAssertEqual(held[0].readResponse()?.status, 200)
        XCTAssertTrue(held[0].isClosedByPeer())
        var again: HTTPReply? = nil
        for _ in 0..<250 where again?.status != 200 {  // the close reaches the limiter a moment later
            let c = try RawClient(port: running.port)
            c.send(post(#"{"cmd":"meter_reading"}"#))
            again = c.readResponse()
            if again?.status != 200 { try await Task.sleep(for: .milliseconds(20)) }
        }
        XCTAssertEqual(again?.status, 200)
    }

    func testListenParsing() throws {
        let c = try APIServer.Configuration(listen: "127.0.0.1:8080")
        XCTAssertEqual(c.host, "127.0.0.1")
        XCTAssertEqual(c.port, 8080)
        XCTAssertEqual(try APIServer.Configuration(listen: "[::1]:0").host, "::1")
        XCTAssertThrowsError(try APIServer.Configuration(listen: "localhost"))
        XCTAssertThrowsError(try APIServer.Configuration(listen: "0.0.0.0:99999"))
    }
}

/// Manual throughput check: `METEREXT_BENCH_PORT=18080 swift test --filter testServeForBenchmark`, then
/// `wrk -s post.lua http://127.0.0.1:18080/api`. Skipped unless the variable is set.
final class BenchmarkServer: XCTestCase {
    func testServeForBenchmark() async throws {
        guard let p = getenv("METEREXT_BENCH_PORT").flatMap({ Int(String(cString: $0)) }) else {
            throw XCTSkip("set METEREXT_BENCH_PORT to serve for a benchmark")
        }
        let seconds = getenv("METEREXT_BENCH_SECONDS").flatMap { Int(String(cString: $0)) } ?? 30
        let running = try await HTTPFixture.start { $0.port = p }
        try await Task.sleep(for: .seconds(seconds))
        try await running.server.stop()
    }
}
