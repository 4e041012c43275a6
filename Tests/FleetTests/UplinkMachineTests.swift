import XCTest
@testable import Fleet

/// The MQTT session machine under synthetic time (issue 16): no broker, no clock, no store — events in, actions out.
final class UplinkMachineTests: XCTestCase {
    typealias M = UplinkMachine

    static let meter = M.MeterPresence(address: 1, meterID: "33B0000126001", online: true)

    static func interval(_ seq: Int64) -> UplinkInterval {
        UplinkInterval(seq: seq, start: 1000 + (seq - 1) * 60, end: 1000 + seq * 60,
                       values: [.init(obis: "1-0:1.8.0.255", value: Double(seq))])
    }

    /// A tiny in-memory store and broker around the machine: performs fetches, assigns mids, records publishes.
    struct Harness {
        var machine: M
        var store: [Int64] = []
        var nextMid: Int32 = 1
        var midOf: [Int32: Int64] = [:]
        var published: [Int64] = []
        var persisted: [[UInt8: Int64]] = []
        var actions: [M.Action] = []
        var now = 0.0

        init(config: M.Config = M.Config(), cursors: [UInt8: Int64] = [:], storeUpTo: Int64 = 0) {
            machine = M(config: config, cursors: cursors)
            store = storeUpTo > 0 ? Array(1...storeUpTo) : []
        }

        mutating func send(_ event: M.Event) {
            var queue = [event]
            while !queue.isEmpty {
                let e = queue.removeFirst()
                for action in machine.handle(e, now: now) {
                    actions.append(action)
                    switch action {
                    case .fetch(let meter, let after, let limit):
                        let rows = store.filter { $0 > after }.prefix(limit).map { UplinkMachineTests.interval($0) }
                        queue.append(.fetched(meter: meter, intervals: Array(rows)))
                    case .publishInterval(_, let meter, let interval):
                        let mid = nextMid
                        nextMid += 1
                        midOf[mid] = interval.seq
                        published.append(interval.seq)
                        queue.append(.intervalPublished(meter: meter, seq: interval.seq, mid: mid))
                    case .persistCursors(let c):
                        persisted.append(c)
                    default:
                        break
                    }
                }
            }
        }

        /// Connects and makes the meter known.
        mutating func online() {
            send(.start)
            send(.connected)
            send(.meters([UplinkMachineTests.meter]))
        }

        /// Acknowledges what is in flight now (not what those acknowledgements let through).
        mutating func ackAll() {
            let now = midOf.keys.sorted()
            for mid in now { midOf[mid] = nil }
            for mid in now { send(.puback(mid: mid)) }
        }

        mutating func clearActions() -> [M.Action] {
            defer { actions.removeAll() }
            return actions
        }
    }

    func testStartConnectsAndOnlineSubscribesAnnouncesAndFillsTheWindow() {
        var h = Harness(storeUpTo: 20)
        h.send(.start)
        XCTAssertEqual(h.clearActions(), [.connect])
        XCTAssertEqual(h.machine.state, .connecting)
        h.send(.connected)
        h.send(.meters([Self.meter]))
        let actions = h.clearActions()
        XCTAssertTrue(actions.contains(.subscribe(["homeassistant/status"])))
        XCTAssertTrue(actions.contains(.publishBoardOnline))
        XCTAssertTrue(actions.contains(.announceDiscovery(Self.meter)))
        XCTAssertTrue(actions.contains(.publishAvailability(Self.meter)))
        XCTAssertTrue(actions.contains(.publishLive(Self.meter)))
        // Bounded: exactly the window is in flight, nothing more fetched or queued.
        XCTAssertEqual(h.published, Array(1...8))
        XCTAssertEqual(h.machine.inFlightCount, 8)
    }

    func testCursorAdvancesOnlyOnPubackAndInOrder() {
        var h = Harness(storeUpTo: 5)
        h.online()
        XCTAssertEqual(h.machine.cursor(meter: 1), 0)
        // PUBACK for seq 2 before seq 1: the cursor must not pass seq 1.
        let midForSeq = Dictionary(uniqueKeysWithValues: h.midOf.map { ($1, $0) })
        h.send(.puback(mid: midForSeq[2]!))
        XCTAssertEqual(h.machine.cursor(meter: 1), 0)
        h.send(.puback(mid: midForSeq[1]!))
        XCTAssertEqual(h.machine.cursor(meter: 1), 2)
        h.send(.puback(mid: midForSeq[4]!))
        XCTAssertEqual(h.machine.cursor(meter: 1), 2)
        h.send(.puback(mid: midForSeq[3]!))
        h.send(.puback(mid: midForSeq[5]!))
        XCTAssertEqual(h.machine.cursor(meter: 1), 5)
        // An unknown mid (a QoS 0 or discovery publish) changes nothing.
        h.send(.puback(mid: 999))
        XCTAssertEqual(h.machine.cursor(meter: 1), 5)
    }

    func testDisconnectResendsFromTheCursorWithTheSameSeqAndBacksOff() {
        var h = Harness(storeUpTo: 12)
        h.online()
        let midForSeq = Dictionary(uniqueKeysWithValues: h.midOf.map { ($1, $0) })
        for seq in 1...3 { h.send(.puback(mid: midForSeq[Int64(seq)]!)) }
        h.midOf.removeAll()
        h.published.removeAll()
        h.send(.disconnected("connection lost"))
        XCTAssertEqual(h.machine.state, .disconnected)
        XCTAssertEqual(h.machine.inFlightCount, 0)
        // The cursor is written at once when the connection drops.
        XCTAssertEqual(h.clearActions().filter { if case .persistCursors = $0 { true } else { false } }.last,
                       .persistCursors([1: 3]))
        // Backoff: 1 s, then 2 s, then 4 s … capped.
        h.now = 0.5
        h.send(.tick)
        XCTAssertFalse(h.clearActions().contains(.connect))
        h.now = 1.0
        h.send(.tick)
        XCTAssertTrue(h.clearActions().contains(.connect))
        h.send(.connectFailed(.unreachable("refused")))
        h.now = 2.5
        h.send(.tick)
        XCTAssertFalse(h.clearActions().contains(.connect))
        h.now = 3.0
        h.send(.tick)
        XCTAssertTrue(h.clearActions().contains(.connect))
        h.send(.connected)
        // Resent from the cursor (seq 4), never a gap, never a new seq for an old interval.
        XCTAssertEqual(h.published, Array(4...11))
        h.ackAll()
        XCTAssertEqual(h.published, Array(4...12))
        h.ackAll()
        XCTAssertEqual(h.machine.cursor(meter: 1), 12)
    }

    func testBackoffIsCapped() {
        var config = M.Config()
        config.backoffMax = 8
        var h = Harness(config: config)
        h.send(.start)
        _ = h.clearActions()
        var waits: [Double] = []
        for _ in 0..<8 {
            let failedAt = h.now
            h.send(.connectFailed(.unreachable("no route")))
            // Step until the next connect.
            while !h.clearActions().contains(.connect) {
                h.now += 0.25
                h.send(.tick)
            }
            waits.append(h.now - failedAt)
        }
        XCTAssertEqual(waits, [1, 2, 4, 8, 8, 8, 8, 8])
    }

    func testNeverAckingBrokerKeepsTheWindowBoundedThenReconnects() {
        var config = M.Config()
        config.window = 4
        config.ackTimeout = 30
        var h = Harness(config: config, storeUpTo: 10_000)
        h.online()
        XCTAssertEqual(h.machine.inFlightCount, 4)
        for step in 1...290 {
            h.now = Double(step) / 10
            h.send(.tick)
        }
        // Nothing beyond the window was fetched or published while no PUBACK came.
        XCTAssertEqual(h.published.count, 4)
        h.now = 30
        h.send(.tick)
        XCTAssertEqual(h.machine.state, .noAcks)
        XCTAssertTrue(h.machine.detail.contains("no PUBACK"))
        XCTAssertTrue(h.clearActions().contains { if case .disconnect = $0 { true } else { false } })
        XCTAssertEqual(h.machine.inFlightCount, 0)
        XCTAssertEqual(h.machine.cursor(meter: 1), 0)
        // Reconnected: still `no_acks` (the window fills again and nothing comes back) until a PUBACK arrives.
        h.now = 31
        h.send(.tick)
        h.send(.connected)
        XCTAssertEqual(h.machine.state, .noAcks)
        XCTAssertEqual(h.published.count, 8, "the same four intervals sent again, never more than the window")
        h.ackAll()
        XCTAssertEqual(h.machine.state, .connected)
        XCTAssertEqual(h.machine.cursor(meter: 1), 4)
    }

    func testRefusedCredentialsAndTLSErrorsAreReported() {
        var h = Harness()
        h.send(.start)
        h.send(.connectFailed(.credentials("the broker refused the credentials: Bad user name or password")))
        XCTAssertEqual(h.machine.state, .refusedCredentials)
        XCTAssertTrue(h.clearActions().contains { if case .log(true, let m) = $0 { m.contains("refused_credentials") } else { false } })
        h.now = 10
        h.send(.tick)
        h.send(.connectFailed(.tls("TLS handshake failed")))
        XCTAssertEqual(h.machine.state, .tlsError)
        h.now = 20
        h.send(.tick)
        h.send(.connected)
        XCTAssertEqual(h.machine.state, .connected)
        XCTAssertEqual(h.machine.detail, "")
    }

    func testHomeAssistantOnlineReannouncesDiscovery() {
        var h = Harness()
        h.online()
        _ = h.clearActions()
        h.send(.message(topic: "homeassistant/status", payload: Array("offline".utf8)))
        XCTAssertEqual(h.clearActions(), [])
        h.send(.message(topic: "homeassistant/status", payload: Array("online".utf8)))
        let actions = h.clearActions()
        XCTAssertTrue(actions.contains(.announceDiscovery(Self.meter)))
        XCTAssertTrue(actions.contains(.publishAvailability(Self.meter)))
    }

    func testRelayCommandsOnlyWhenEnabled() {
        var off = Harness()
        off.online()
        _ = off.clearActions()
        off.send(.message(topic: "meterext/33B0000126001/relay/set", payload: Array("OFF".utf8)))
        XCTAssertEqual(off.clearActions(), [])

        var on = Harness()
        on.machine = M(commandsEnabled: true, commandTopicPrefix: "meterext/")
        on.send(.start)
        XCTAssertTrue(on.clearActions() == [.connect])
        on.send(.connected)
        XCTAssertTrue(on.clearActions().contains(.subscribe(["homeassistant/status", "meterext/+/relay/set"])))
        on.send(.meters([Self.meter]))
        _ = on.clearActions()
        on.send(.message(topic: "meterext/33B0000126001/relay/set", payload: Array("OFF".utf8)))
        XCTAssertEqual(on.clearActions(), [.setRelay(meter: 1, on: false)])
        on.send(.message(topic: "meterext/OTHERMETER/relay/set", payload: Array("ON".utf8)))
        XCTAssertEqual(on.clearActions(), [])
    }

    func testLiveReadingIsRateLimitedAndNeverSentOffline() {
        var config = M.Config()
        config.liveInterval = 10
        var h = Harness(config: config)
        h.online()
        func lives(_ a: [M.Action]) -> Int { a.filter { if case .publishLive = $0 { true } else { false } }.count }
        XCTAssertEqual(lives(h.clearActions()), 1)
        for step in 1...99 {
            h.now = Double(step) / 10
            h.send(.tick)
        }
        XCTAssertEqual(lives(h.clearActions()), 0)
        h.now = 10
        h.send(.tick)
        XCTAssertEqual(lives(h.clearActions()), 1)
        h.send(.disconnected("gone"))
        h.now = 10.5
        h.send(.tick)
        XCTAssertEqual(lives(h.clearActions()), 0, "a live reading is never queued while offline")
    }

    func testCursorIsPersistedAtMostEveryIntervalAndRestoredOnStart() {
        var h = Harness(storeUpTo: 30)
        h.online()
        h.ackAll()
        h.ackAll()
        h.now = 0.5
        h.ackAll()
        // Many acks within one persist interval: one write.
        XCTAssertEqual(h.persisted.count, 1)
        h.now = 2.5
        h.send(.tick)
        XCTAssertEqual(h.persisted.count, 2)
        XCTAssertEqual(h.persisted.last?[1], h.machine.cursor(meter: 1))

        // A restart (or SIGKILL) resumes after the saved cursor.
        var restarted = Harness(cursors: [1: 17], storeUpTo: 30)
        restarted.online()
        XCTAssertEqual(restarted.published.first, 18)
    }

    func testNewIntervalsAreFetchedAfterTheStorePollInterval() {
        var h = Harness(storeUpTo: 2)
        h.online()
        h.ackAll()
        XCTAssertEqual(h.published, [1, 2])
        h.store.append(3)
        h.now = 0.5
        h.send(.tick)
        XCTAssertEqual(h.published, [1, 2], "the store is not asked again within storePollInterval")
        h.now = 1.0
        h.send(.tick)
        XCTAssertEqual(h.published, [1, 2, 3])
    }

    func testAvailabilityFollowsTheMeterLink() {
        var h = Harness()
        h.online()
        _ = h.clearActions()
        let offline = M.MeterPresence(address: 1, meterID: Self.meter.meterID, online: false)
        h.send(.meters([offline]))
        let actions = h.clearActions()
        XCTAssertTrue(actions.contains(.publishAvailability(offline)))
        XCTAssertTrue(actions.contains(.publishStatus(offline)))
        XCTAssertFalse(actions.contains { if case .publishLive = $0 { true } else { false } })
    }
}
