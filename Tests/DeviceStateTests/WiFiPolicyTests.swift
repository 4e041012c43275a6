import XCTest

@testable import DeviceState

/// The policy alone, with synthetic time: events in, actions out (issue 13).
final class WiFiPolicyTests: XCTestCase {
    typealias P = WiFiPolicy
    let configuredDown = P.Observation(configured: true, linkUp: false)
    let configuredUp = P.Observation(configured: true, linkUp: true)
    let unconfigured = P.Observation(configured: false, linkUp: false)

    /// Feeds an event and reports every action as succeeded at the same instant (what the executor does).
    func run(_ p: inout P, _ event: P.Event, now: Double, connectSucceeds: Bool = false) -> [P.Action] {
        var done: [P.Action] = []
        var queue = p.handle(event)
        while !queue.isEmpty {
            let a = queue.removeFirst()
            done.append(a)
            switch a {
            case .connect: queue += p.handle(.connectFinished(now: now, succeeded: connectSucceeds))
            case .openAccessPoint: queue += p.handle(.accessPointOpened(now: now, succeeded: true))
            case .closeAccessPoint: queue += p.handle(.accessPointClosed(now: now, succeeded: true))
            case .extendAccessPoint: break
            }
        }
        return done
    }

    func testNewBootOpensForTheTimeoutThenTheClientJoins() {
        var p = P(settings: .init())
        XCTAssertEqual(run(&p, .boot(now: 0, newBoot: true, memory: nil, configuredDown), now: 0), [.openAccessPoint(reason: .newBoot)])
        XCTAssertEqual(p.accessPointClosesIn(now: 0), 600)
        XCTAssertEqual(run(&p, .tick(now: 599, configuredDown), now: 599), [])
        XCTAssertEqual(run(&p, .tick(now: 600, configuredDown), now: 600, connectSucceeds: true), [.closeAccessPoint, .connect])
        XCTAssertTrue(p.connected)
        XCTAssertFalse(p.accessPointOpen)
    }

    /// The reproduction of issue 13: a service restart of a connected board must not open the access point.
    func testServiceRestartOfAConnectedBoardDoesNothing() {
        var p = P(settings: .init())
        let memory = P.Memory(accessPointOpen: false, accessPointClosesAt: nil, accessPointReason: nil, noConnectionSince: nil)
        XCTAssertEqual(run(&p, .boot(now: 5000, newBoot: false, memory: memory, configuredUp), now: 5000), [])
        XCTAssertTrue(p.connected)
        XCTAssertFalse(p.accessPointOpen)
        for t in stride(from: 5000.0, to: 9000, by: 5) { XCTAssertEqual(run(&p, .tick(now: t, configuredUp), now: t), []) }
    }

    func testServiceRestartResumesAnOpenAccessPointAndItsDeadline() {
        var p = P(settings: .init())
        let memory = P.Memory(accessPointOpen: true, accessPointClosesAt: 600, accessPointReason: .newBoot, noConnectionSince: 0)
        XCTAssertEqual(run(&p, .boot(now: 100, newBoot: false, memory: memory, configuredDown), now: 100), [])
        XCTAssertEqual(p.accessPointClosesIn(now: 100), 500)
        XCTAssertEqual(p.accessPointReason, .newBoot)
        XCTAssertEqual(run(&p, .tick(now: 600, configuredDown), now: 600), [.closeAccessPoint, .connect])
    }

    func testUnreachableFor15MinutesReopensAndTheClockSurvivesARestart() {
        var p = P(settings: .init())
        let memory = P.Memory(accessPointOpen: false, accessPointClosesAt: nil, accessPointReason: nil, noConnectionSince: 1000)
        // Restart at 1500 while the network has been gone since 1000: reopening is due at 1900, not 2400.
        _ = run(&p, .boot(now: 1500, newBoot: false, memory: memory, configuredDown), now: 1500)
        XCTAssertFalse(p.accessPointOpen)
        var opened: Double?
        for t in stride(from: 1505.0, through: 2000, by: 5) {
            if run(&p, .tick(now: t, configuredDown), now: t).contains(.openAccessPoint(reason: .unreachable)) {
                opened = opened ?? t
            }
        }
        XCTAssertEqual(opened, 1900)
        XCTAssertEqual(p.accessPointReason, .unreachable)
    }

    func testNoNetworkConfiguredKeepsTheAccessPointOpen() {
        var p = P(settings: .init())
        XCTAssertEqual(run(&p, .boot(now: 0, newBoot: false, memory: nil, unconfigured), now: 0), [.openAccessPoint(reason: .notConfigured)])
        XCTAssertNil(p.accessPointClosesIn(now: 0))
        XCTAssertEqual(run(&p, .tick(now: 100_000, unconfigured), now: 100_000), [])
        XCTAssertTrue(p.accessPointOpen)
    }

    func testButtonAndCommandOpenAndExtend() {
        var p = P(settings: .init())
        _ = run(&p, .boot(now: 0, newBoot: false, memory: nil, configuredUp), now: 0)
        XCTAssertEqual(run(&p, .button(now: 10), now: 10), [.openAccessPoint(reason: .button)])
        XCTAssertEqual(p.accessPointClosesIn(now: 10), 600)
        XCTAssertFalse(p.connected, "a single radio gives the client up for the access point")
        XCTAssertEqual(run(&p, .accessPointRequested(now: 300, open: true), now: 300), [.extendAccessPoint])
        XCTAssertEqual(p.accessPointClosesIn(now: 300), 600)
        XCTAssertEqual(p.accessPointReason, .command)
        XCTAssertEqual(run(&p, .accessPointRequested(now: 301, open: false), now: 301), [.closeAccessPoint])
        XCTAssertEqual(run(&p, .accessPointRequested(now: 302, open: false), now: 302), [])
    }

    func testConcurrentRadioKeepsTheClientWhileTheAccessPointIsOpen() {
        var p = P(settings: .init(concurrent: true))
        XCTAssertEqual(run(&p, .boot(now: 0, newBoot: true, memory: nil, configuredDown), now: 0, connectSucceeds: true),
                       [.openAccessPoint(reason: .newBoot), .connect])
        XCTAssertTrue(p.connected)
        XCTAssertTrue(p.accessPointOpen)
        // sta_ap: open for good.
        let staAP = P.Observation(configured: true, permanentAccessPoint: true, linkUp: true)
        XCTAssertEqual(run(&p, .configurationChanged(now: 5, staAP, reason: nil), now: 5), [])
        XCTAssertNil(p.accessPointClosesIn(now: 5))
        XCTAssertEqual(run(&p, .tick(now: 100_000, staAP), now: 100_000), [])
        XCTAssertTrue(p.accessPointOpen)
    }

    func testSingleRadioBacksOffWhileTheNetworkStaysAway() {
        var p = P(settings: .init())
        XCTAssertEqual(run(&p, .boot(now: 0, newBoot: false, memory: nil, configuredDown), now: 0), [.connect])
        var attempts: [Double] = [0]
        for t in stride(from: 5.0, through: 700, by: 5) where run(&p, .tick(now: t, configuredDown), now: t).contains(.connect) {
            attempts.append(t)
        }
        XCTAssertEqual(attempts, [0, 10, 30, 70, 150, 310, 610])
    }

    func testAFailedOpenIsRetriedAndNeverLeavesTheBoardWithoutAWayIn() {
        var p = P(settings: .init())
        XCTAssertEqual(p.handle(.boot(now: 0, newBoot: false, memory: nil, unconfigured)), [.openAccessPoint(reason: .notConfigured)])
        XCTAssertEqual(p.handle(.accessPointOpened(now: 0, succeeded: false)), [])  // the radio is gone
        XCTAssertFalse(p.accessPointOpen)
        XCTAssertEqual(p.handle(.tick(now: 5, unconfigured)), [.openAccessPoint(reason: .notConfigured)])
    }

    func testFailedTrialReopensTheAccessPoint() {
        var p = P(settings: .init())
        _ = run(&p, .boot(now: 0, newBoot: true, memory: nil, unconfigured), now: 0)
        XCTAssertEqual(run(&p, .trialStarted(now: 5), now: 5), [])
        XCTAssertFalse(p.accessPointOpen, "a single radio gives the access point up to try a network")
        XCTAssertEqual(run(&p, .trialFailed(now: 35, unconfigured), now: 35), [.openAccessPoint(reason: .configFailed)])
        XCTAssertTrue(p.accessPointOpen)
    }
}
