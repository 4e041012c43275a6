import FoundationEssentials
@testable import MeterService
import Synchronization
import XCTest

/// The protection rule as plain values: which commands run for which request context.
final class AuthorizerTests: XCTestCase {
    static let token = "0123456789abcdef0123456789abcdef"
    static let reading = ["meter_reading", "system_status", "get_ip_info", "wifi_status", "wifi_scan", "relay_status",
                          "meter_info", "meter_status"]

    /// Every command answers OK and records that it ran; relay_set is async like the real one.
    final class Recorder: Sendable {
        let ran = Mutex<[String]>([])
        var commands: [String] { ran.withLock { $0 } }

        func dispatcher() -> CommandDispatcher {
            var registry = CommandRegistry()
            for cmd in CommandAuthorizer.protectedCommands.union(AuthorizerTests.reading) where cmd != "relay_set" {
                registry.register(cmd, sync: { [self] request in
                    ran.withLock { $0.append(request.cmd) }
                    return .ok(OKReply())
                })
            }
            registry.register("relay_set", async: { [self] request in
                ran.withLock { $0.append(request.cmd) }
                return .ok(OKReply())
            })
            return CommandDispatcher(registry: registry)
        }
    }

    func authorizer(required: Bool = true) -> CommandAuthorizer {
        CommandAuthorizer(tokenRequired: required, tokenIsValid: { $0 == Self.token })
    }

    static let remote = RequestContext(peerIsTrusted: false, bearerToken: nil)

    func testTheProtectedListIsTheIssuesList() {
        XCTAssertEqual(CommandAuthorizer.protectedCommands,
                       ["firmware_update", "download_file", "request_post", "meter_factreset", "system_restart",
                        "meter_setkey", "wifi_config", "wifi_ap", "relay_set", "wifi_ap_password"])
    }

    /// Issue 13: a phone on the access point may set the board up, and nothing else that changes it.
    func testTheAccessPointRunsOnlyTheSetUpCommandsWithoutToken() {
        let a = CommandAuthorizer(tokenIsValid: { $0 == "t" })
        let onAP = RequestContext(peerIsTrusted: false, arrivedOnSetupAccessPoint: true, bearerToken: nil)
        for cmd in ["wifi_config", "meter_setkey", "wifi_ap", "wifi_scan", "wifi_status", "get_ip_info",
                    "system_status", "meter_reading", "meter_status"] {
            XCTAssertTrue(a.permits(cmd, onAP), cmd)
        }
        for cmd in ["relay_set", "firmware_update", "download_file", "request_post", "meter_factreset",
                    "system_restart", "wifi_ap_password"] {
            XCTAssertFalse(a.permits(cmd, onAP), cmd)
            XCTAssertTrue(a.permits(cmd, RequestContext(peerIsTrusted: false, arrivedOnSetupAccessPoint: true,
                                                        bearerToken: "t")), cmd)
        }
        XCTAssertFalse(a.permitsChange(onAP), "POST /ota")
    }

    func testEveryProtectedCommandIsRefusedWithoutTokenAndDoesNotRun() async throws {
        let recorder = Recorder()
        let dispatcher = recorder.dispatcher()
        for cmd in CommandAuthorizer.protectedCommands.sorted() {
            for context in [Self.remote, RequestContext(peerIsTrusted: false, bearerToken: "wrong"),
                            RequestContext(peerIsTrusted: false, bearerToken: ""),
                            RequestContext(peerIsTrusted: false, bearerToken: Self.token + "x")] {
                let r = await dispatcher.handle(body: Array(#"{"cmd":"\#(cmd)","id":"7"}"#.utf8), context: context,
                                                authorizer: authorizer())
                XCTAssertEqual(r.status, 401, cmd)
                XCTAssertEqual(text(r.body), #"{"error":"unauthorized","message":"\#(CommandAuthorizer.refusalMessage)","result":"ERROR","id":"7"}"#)
            }
        }
        XCTAssertEqual(recorder.commands, [], "a refused command ran")
    }

    func testProtectedCommandsRunWithTokenFromTrustedPeersOrWhenNotRequired() async throws {
        let contexts: [(RequestContext, CommandAuthorizer)] = [
            (RequestContext(peerIsTrusted: false, bearerToken: Self.token), authorizer()),
            (RequestContext(peerIsTrusted: true, bearerToken: nil), authorizer()),
            (RequestContext(peerIsTrusted: true, bearerToken: "wrong"), authorizer()),  // trust wins over a bad token
            (Self.remote, authorizer(required: false)),
        ]
        for (context, authorizer) in contexts {
            let recorder = Recorder()
            let dispatcher = recorder.dispatcher()
            for cmd in CommandAuthorizer.protectedCommands.sorted() {
                let r = await dispatcher.handle(body: Array(#"{"cmd":"\#(cmd)"}"#.utf8), context: context,
                                                authorizer: authorizer)
                XCTAssertEqual(text(r.body), #"{"result":"OK"}"#, "\(cmd) \(context)")
            }
            XCTAssertEqual(recorder.commands, CommandAuthorizer.protectedCommands.sorted(), "\(context)")
        }
    }

    func testReadingAndUnknownCommandsStayOpen() async throws {
        let recorder = Recorder()
        let dispatcher = recorder.dispatcher()
        for cmd in Self.reading {
            let r = await dispatcher.handle(body: Array(#"{"cmd":"\#(cmd)"}"#.utf8), context: Self.remote,
                                            authorizer: authorizer())
            XCTAssertEqual(r.status, 200, cmd)
        }
        XCTAssertEqual(recorder.commands, Self.reading)
        let unknown = await dispatcher.handle(body: Array(#"{"cmd":"coffee","id":1}"#.utf8), context: Self.remote,
                                              authorizer: authorizer())
        XCTAssertEqual(try decode(ErrorDTO.self, unknown.body).error, "unkown_cmd")
        let broken = await dispatcher.handle(body: Array(#"{"cmd":"#.utf8), context: Self.remote, authorizer: authorizer())
        XCTAssertEqual(try decode(ErrorDTO.self, broken.body).error, "invalid_json")
    }

    func testInProcessDispatchWithoutAuthorizerRunsEverything() async {
        let recorder = Recorder()
        _ = await recorder.dispatcher().handle(body: Array(#"{"cmd":"system_restart"}"#.utf8))
        XCTAssertEqual(recorder.commands, ["system_restart"])
    }

    struct ErrorDTO: Decodable { var error: String }
}
