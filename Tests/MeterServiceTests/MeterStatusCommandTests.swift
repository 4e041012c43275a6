import FoundationEssentials
import KPM33B
import MeterStatus
import XCTest
@testable import MeterService

/// `meter_status` through the dispatcher: the relay opened by this board is 1007 with its `because`; an opening
/// the board cannot explain has no code, says so and sends staff to the meter's display (issue 14).
final class MeterStatusCommandTests: XCTestCase {
    struct Reply: Decodable {
        var status: String
        var ami_code: String?
        var sub_code: String?
        var cause: String?
        var action: String?
        var because: String?
    }

    private func status(_ change: (inout MeterSnapshot) -> Void) async throws -> Reply {
        var snapshot = Fixture.snapshot()
        change(&snapshot)
        snapshot.generation += 1
        let link = FakeMeterLink(snapshot)
        let monitor = StatusMonitor(link: link)
        monitor.refresh(now: 0)
        var registry = CommandRegistry()
        StatusCommands(monitor: monitor).register(into: &registry)
        let response = await CommandDispatcher(registry: registry).handle(body: Array(#"{"cmd":"meter_status"}"#.utf8))
        return try JSONDecoder().decode(Reply.self, from: Data(response.body))
    }

    func testRelayOpenedByThisBoard() async throws {
        let reply = try await status { $0.relay = RelayState(bits: 0); $0.relayOpenedByBoard = true }
        XCTAssertEqual(reply.status, "ok")
        XCTAssertEqual(reply.ami_code, "1007")
        XCTAssertEqual(reply.sub_code, "7")
        XCTAssertEqual(reply.because, "relay open (phase A,B,C) after this board's relay_set command opened it")
    }

    func testRelayOpenForAnUnknownReason() async throws {
        let reply = try await status { $0.relay = RelayState(bits: 0) }
        XCTAssertEqual(reply.status, "unknown")
        XCTAssertNil(reply.ami_code)
        XCTAssertEqual(reply.cause, "Relay open, reason unknown")
        XCTAssertEqual(reply.action, OperatingStatus.unknownOpenAction)
        XCTAssertTrue(reply.because?.contains("reason unknown") ?? false)
    }

    func testRelayClosedSubCodeAsTheGuideWritesIt() async throws {
        let reply = try await status { $0.relay = RelayState(bits: 7) }
        XCTAssertEqual(reply.ami_code, "1000")
        XCTAssertEqual(reply.sub_code, "00")
        XCTAssertEqual(reply.because, "relay closed: the meter supplies the load")
    }
}
