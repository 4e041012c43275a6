import Glibc
import ModbusCore
import Platform
@testable import KPM33B
import XCTest

/// Issue 17: one schedule across several meters, driven by synthetic time.
final class BusScheduleTests: XCTestCase {
    let s: UInt64 = 1_000_000_000

    func testEveryMeterIsPolledOncePerCycle() {
        var schedule = BusSchedule(meters: 3, now: 0, cycleNanos: s, offlineAfterNanos: 5 * s)
        var now: UInt64 = 0
        var polled: [Int] = []
        while now < 10 * s {
            switch schedule.next(now: now) {
            case .poll(let i):
                polled.append(i)
                schedule.completed(i, started: now, ok: true, now: now + 50_000_000)
                now += 50_000_000
            case .sleep(let until):
                XCTAssertGreaterThan(until, now)
                now = until
            }
        }
        for i in 0..<3 { XCTAssertEqual(polled.filter { $0 == i }.count, 10, "meter \(i)") }
        XCTAssertEqual(Array(polled.prefix(6)), [0, 1, 2, 0, 1, 2])
    }

    /// Bus slower than the cycle: the meters take turns, nobody starves.
    func testOverloadedBusSharesFairly() {
        var schedule = BusSchedule(meters: 3, now: 0, cycleNanos: s, offlineAfterNanos: 5 * s)
        var now: UInt64 = 0
        var counts = [0, 0, 0]
        for _ in 0..<300 {
            guard case .poll(let i) = schedule.next(now: now) else { return XCTFail("an overloaded bus never sleeps") }
            counts[i] += 1
            schedule.completed(i, started: now, ok: true, now: now + 600_000_000)
            now += 600_000_000
        }
        XCTAssertEqual(counts, [100, 100, 100])
    }

    /// A silent meter backs off exponentially once it counts as offline; the others keep their cycle.
    func testSilentMeterBacksOffWithoutSlowingTheOthers() {
        var schedule = BusSchedule(meters: 2, now: 0, cycleNanos: s, offlineAfterNanos: 5 * s, maxBackoffNanos: 8 * s)
        var now: UInt64 = 0
        var attempts: [UInt64] = []
        var healthy: [UInt64] = []
        while now < 60 * s {
            switch schedule.next(now: now) {
            case .poll(1):
                attempts.append(now)
                // A silent meter costs a timeout on the bus.
                schedule.completed(1, started: now, ok: false, now: now + 600_000_000)
                now += 600_000_000
            case .poll(let i):
                healthy.append(now)
                schedule.completed(i, started: now, ok: true, now: now + 100_000_000)
                now += 100_000_000
            case .sleep(let until):
                now = until
            }
        }
        // Every cycle while not yet offline, then 2, 4, 8, 8, … cycles apart.
        let gaps = zip(attempts.dropFirst(), attempts).map { Double($0 - $1) / 1e9 }
        XCTAssertEqual(gaps.prefix(5).map { $0.rounded() }, [1, 1, 1, 1, 1])
        // (Each gap also holds the failed attempt's own timeout and at most one poll of the other meter.)
        for (gap, backoff) in zip(gaps.dropFirst(5), [2.0, 4, 8, 8, 8, 8]) {
            XCTAssertGreaterThanOrEqual(gap, backoff)
            XCTAssertLessThanOrEqual(gap, backoff + 0.7)
        }
        // The healthy meter: one poll per second throughout, never later than its cycle plus one timeout.
        let healthyGaps = zip(healthy.dropFirst(), healthy).map { $0 - $1 }
        XCTAssertLessThanOrEqual(healthyGaps.max() ?? 0, s + 600_000_000)
        XCTAssertGreaterThanOrEqual(healthy.count, 59)
        XCTAssertLessThan(attempts.count, 20)
    }

    func testOneAnswerResetsTheBackoff() {
        var schedule = BusSchedule(meters: 2, now: 0, cycleNanos: s, offlineAfterNanos: 2 * s, maxBackoffNanos: 30 * s)
        for t in 0..<6 { schedule.completed(1, started: UInt64(t) * s, ok: false, now: UInt64(t) * s) }
        XCTAssertGreaterThan(schedule.entries[1].backoffSteps, 0)
        schedule.completed(1, started: 20 * s, ok: true, now: 20 * s)
        XCTAssertEqual(schedule.entries[1], BusSchedule.Entry(nextDue: 21 * s, failingSince: nil, backoffSteps: 0))
    }

    /// Alone on its bus a silent meter keeps its cycle: nobody to give way to, and recovery is seen at once.
    func testSingleMeterNeverBacksOff() {
        var schedule = BusSchedule(meters: 1, now: 0, cycleNanos: s, offlineAfterNanos: 2 * s)
        for t in 0..<20 { schedule.completed(0, started: UInt64(t) * s, ok: false, now: UInt64(t) * s + s / 2) }
        XCTAssertEqual(schedule.entries[0].nextDue, 20 * s)
        XCTAssertEqual(schedule.entries[0].backoffSteps, 0)
    }
}

/// Issue 17: requests forwarded from Modbus TCP run between poll transactions, in order: each waits at most one.
final class MeterBusForwardingTests: XCTestCase {
    func testForwardedRequestsInterleaveWithPollTransactions() throws {
        let meter = SimulatedMeter(unit: 1)
        let client = LoopbackClient(meter: meter)
        let clock = ManualClock()
        let poller = MeterPoller(client: client, unit: 1, lineDescription: "test", clock: clock.pollClock)
        // A started bus whose thread does nothing: this test is the poll thread.
        let bus = MeterBus(client: client, meters: [poller], clock: clock.pollClock,
                           startThread: { (name, _) throws(SystemError) in try OSThread(name: name) {} })
        try bus.start()
        defer { bus.stop() }
        let outcomes = Outcomes()
        let serial = ModbusRequest.readHoldingRegisters(unit: 1, start: 0x0012, count: 7)
        let relay = ModbusRequest.readCoils(unit: 1, start: 1, count: 1)
        bus.forward(serial, deadline: .max) { outcomes.append($0) }
        bus.forward(relay, deadline: .max) { outcomes.append($0) }
        // Already past its deadline when its turn comes: answered .failed, never sent.
        bus.forward(.readHoldingRegisters(unit: 1, start: 0x0200, count: 2), deadline: 0) { outcomes.append($0) }
        let before = client.requests.count
        poller.runCycle()
        let sent = Array(client.requests[before...])
        // job, poll transaction, job, poll transaction, (expired job: nothing sent), the rest of the cycle.
        XCTAssertEqual(sent[0], serial)
        XCTAssertEqual(sent[1].start, KPM33BMap.basic.start)
        XCTAssertEqual(sent[2], relay)
        XCTAssertFalse(sent.contains(.readHoldingRegisters(unit: 1, start: 0x0200, count: 2)), "expired job sent")
        let got = outcomes.all
        XCTAssertEqual(got.count, 3)
        guard case .reply(let pdu) = got[0] else { return XCTFail("\(got[0])") }
        XCTAssertEqual(Array(pdu.prefix(2)), [3, 14])
        guard case .reply(let coils) = got[1] else { return XCTFail("\(got[1])") }
        XCTAssertEqual(Array(coils.prefix(2)), [1, 1])
        XCTAssertEqual(got[2], .failed)
    }

    func testMeterExceptionsComeBackAsExceptions() throws {
        let client = LoopbackClient(meter: SimulatedMeter(unit: 1))
        let clock = ManualClock()
        let poller = MeterPoller(client: client, unit: 1, lineDescription: "test", clock: clock.pollClock)
        let bus = MeterBus(client: client, meters: [poller], clock: clock.pollClock,
                           startThread: { (name, _) throws(SystemError) in try OSThread(name: name) {} })
        try bus.start()
        defer { bus.stop() }
        let outcomes = Outcomes()
        bus.forward(.readHoldingRegisters(unit: 1, start: 0x0003, count: 2), deadline: .max) { outcomes.append($0) }
        XCTAssertTrue(bus.serveOneJob())
        XCTAssertEqual(outcomes.all, [.exception(2)])
        XCTAssertFalse(bus.serveOneJob())
    }

    func testStoppedBusFailsAtOnce() {
        let client = LoopbackClient(meter: SimulatedMeter(unit: 1))
        let poller = MeterPoller(client: client, unit: 1, lineDescription: "test")
        let bus = MeterBus(client: client, meters: [poller])
        let outcomes = Outcomes()
        bus.forward(.readCoils(unit: 1, start: 1, count: 1), deadline: .max) { outcomes.append($0) }
        XCTAssertEqual(outcomes.all, [.failed])
        XCTAssertTrue(client.requests.isEmpty)
    }
}

final class Outcomes: @unchecked Sendable {
    private var list: [ForwardOutcome] = []
    private let lock = NSLockish()
    func append(_ o: ForwardOutcome) { lock.run { list.append(o) } }
    var all: [ForwardOutcome] { lock.run { list } }
}

final class NSLockish: @unchecked Sendable {
    private var m = pthread_mutex_t()
    init() { pthread_mutex_init(&m, nil) }
    func run<T>(_ body: () -> T) -> T { pthread_mutex_lock(&m); defer { pthread_mutex_unlock(&m) }; return body() }
}
