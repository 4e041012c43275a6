import Dispatch
@testable import MeterHTTP
import MeterService
import NIOCore
import Synchronization
import XCTest

/// Commands that block (fsync, WiFi, subprocesses) and work after a reply (factory reset) never hold up the event
/// loop: other connections are answered and the liveness tick (what feeds the systemd watchdog) keeps going.
final class OffloadTests: XCTestCase {
    let release = DispatchSemaphore(value: 0)
    final class Count: Sendable { let value = Atomic<Int>(0) }
    let count = Count()
    var finishedCount: Int { count.value.load(ordering: .relaxed) }
    var server: APIServer!
    var port = 0

    override func setUp() async throws {
        var registry = CommandRegistry()
        let release = self.release, count = self.count
        registry.register("ping", sync: { _ in .ok(OKReply()) })
        registry.register("slow_blocking", blocking: { _ in
            release.wait()  // like a WiFi reset queued behind a 30 s wifi_config
            count.value.add(1, ordering: .relaxed)
            return .ok(OKReply())
        })
        registry.register("reset_after_reply", sync: { _ in
            .ok(OKReply(), afterReply: {
                release.wait()
                count.value.add(1, ordering: .relaxed)
            })
        })
        var config = APIServer.Configuration(host: "127.0.0.1", port: 0)
        config.livenessInterval = .milliseconds(20)
        server = APIServer(configuration: config, dispatcher: CommandDispatcher(registry: registry), setupPageHTML: "")
        let address = try await server.start()
        port = try XCTUnwrap(address.port)
    }

    override func tearDown() async throws {
        release.signal()
        release.signal()
        try await server.stop()
    }

    func assertOtherConnectionsAreServedAndTheLoopTicks(file: StaticString = #filePath, line: UInt = #line) throws {
        let tick = server.lastLivenessTick
        let other = try RawClient(port: port, receiveTimeout: 20)
        other.send(post(#"{"cmd":"ping"}"#))
        XCTAssertEqual(other.readResponse()?.status, 200, "another connection was not answered", file: file, line: line)
        // The tick runs on the event loop every 20 ms: it must move while the slow work is still blocked.
        var moved = false
        for _ in 0..<1000 where !moved {
            moved = server.lastLivenessTick != tick
            if !moved { usleep(5_000) }
        }
        XCTAssertTrue(moved, "the event loop's liveness tick stopped", file: file, line: line)
        XCTAssertEqual(finishedCount, 0, "the slow work was meant to still be blocked", file: file, line: line)
    }

    func testABlockingCommandRunsOffTheEventLoop() throws {
        let slow = try RawClient(port: port, receiveTimeout: 20)
        slow.send(post(#"{"cmd":"slow_blocking","id":1}"#))
        try assertOtherConnectionsAreServedAndTheLoopTicks()
        release.signal()
        let r = try XCTUnwrap(slow.readResponse())
        XCTAssertEqual(r.text, #"{"result":"OK","id":1}"#)
        XCTAssertEqual(finishedCount, 1)
    }

    func testWorkAfterTheReplyRunsOffTheEventLoop() throws {
        let reset = try RawClient(port: port, receiveTimeout: 20)
        reset.send(post(#"{"cmd":"reset_after_reply"}"#))
        XCTAssertEqual(reset.readResponse()?.status, 200, "the reply goes out first")
        try assertOtherConnectionsAreServedAndTheLoopTicks()
        release.signal()
        for _ in 0..<1000 where finishedCount == 0 { usleep(5_000) }
        XCTAssertEqual(finishedCount, 1)
    }
}
