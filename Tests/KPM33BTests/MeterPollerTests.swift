import Glibc
import Platform
import XCTest
import ModbusCore
@testable import KPM33B

final class MeterPollerTests: XCTestCase {
    var meter: SimulatedMeter!
    var client: LoopbackClient!
    var clock: ManualClock!
    var poller: MeterPoller!

    override func setUp() {
        meter = SimulatedMeter(unit: 1, serialNumber: "33B0000126042")
        meter.scenario.wobble = false
        client = LoopbackClient(meter: meter)
        clock = ManualClock()
        poller = MeterPoller(client: client, unit: 1, lineDescription: "9600 8E1", clock: clock.pollClock)
    }

    func testFirstCycleReadsEveryGroup() {
        poller.runCycle()
        let s = poller.snapshot()
        XCTAssertEqual(s.health, .online)
        XCTAssertEqual(s.serialNumber, "33B0000126042")
        for group in RegisterGroup.allCases {
            XCTAssertEqual(s.readTime(group), clock.unix, "\(group) not read")
        }
        XCTAssertEqual(s.value(Register.voltageA), meter.float(Register.voltageA))
        XCTAssertEqual(s.value(Register.voltageA)!, 230.4, accuracy: 0.01)
        // The simulator integrates energy between requests: the value read is within a few Wh of the current one.
        XCTAssertEqual(s.value(Register.forwardActiveEnergy)!, meter.float(Register.forwardActiveEnergy), accuracy: 0.01)
        XCTAssertEqual(s.value(Register.apparentDemandC), meter.float(Register.apparentDemandC))
        let lastHistory = Register.historyRuns[9].register(month: 12)
        XCTAssertEqual(s.value(lastHistory), meter.float(lastHistory))
        XCTAssertEqual(s.parameters?.controlMode, .remote)
        XCTAssertEqual(s.parameters?.loadThresholdKW, 12)
        XCTAssertEqual(s.relay?.closed, true)
        XCTAssertNil(s.lastError)
    }

    func testSteadyCyclesReadOnlyWhatIsDue() {
        poller.runCycle()
        let afterFirst = client.requests.count
        clock.advance(seconds: 1)
        poller.runCycle()
        // Basic block + relay only.
        XCTAssertEqual(client.requests.count - afterFirst, 2)
        XCTAssertEqual(client.requests.suffix(2).map(\.function), [.readHoldingRegisters, .readCoils])
        clock.advance(seconds: 5)
        let before = client.requests.count
        poller.runCycle()
        // Energy and demand come due every 5 s.
        XCTAssertEqual(client.requests.count - before, 4)
    }

    func testHistoryIsReadInThreeRequestsOfAtMost125Registers() {
        poller.runCycle()
        let history = client.requests.filter { KPM33BMap.history.contains($0.start) && $0.function == .readHoldingRegisters }
        XCTAssertEqual(history.map(\.quantity), [124, 124, 12])
        XCTAssertEqual(history.map(\.start), [0x009C, 0x0118, 0x0194])
    }

    func testTransientErrorsAreRetriedAndCounted() {
        client.faults = [.corruptCRC, .garbagePrefix]
        poller.runCycle()
        let s = poller.snapshot()
        XCTAssertEqual(s.health, .online)
        XCTAssertEqual(s.counters.crcErrors, 1)
        XCTAssertEqual(s.counters.retries, 1)
        XCTAssertEqual(s.counters.failedAttempts, 1)
    }

    func testSilentMeterGoesStaleThenOffline() {
        poller.runCycle()
        client.persistentFault = .silence
        clock.advance(seconds: 1)
        poller.runCycle()
        var s = poller.snapshot()
        XCTAssertEqual(s.health, .stale)
        XCTAssertEqual(s.lastError?.kind, .timeout)
        XCTAssertTrue(s.lastError!.message.contains("no reply from unit 1"), s.lastError!.message)
        clock.advance(seconds: 6)
        poller.runCycle()
        s = poller.snapshot()
        XCTAssertEqual(s.health, .offline)
        // The old values are still in the snapshot, with their old timestamps: the API decides not to serve them.
        XCTAssertLessThan(s.readTime(.basic)!, clock.unix)
        // Recovery.
        client.persistentFault = nil
        clock.advance(seconds: 1)
        poller.runCycle()
        XCTAssertEqual(poller.snapshot().health, .online)
    }

    func testNeverAnsweringMeterIsOfflineNotStarting() {
        client.persistentFault = .silence
        poller.runCycle()
        XCTAssertEqual(poller.snapshot().health, .starting)
        XCTAssertNil(poller.snapshot().basic)
        clock.advance(seconds: 6)
        poller.runCycle()
        XCTAssertEqual(poller.snapshot().health, .offline)
    }

    func testExceptionsAreNotRetriedAndNamed() {
        client.faults = [.exception(.illegalDataAddress)]
        poller.runCycle()
        let s = poller.snapshot()
        XCTAssertEqual(s.counters.exceptions, 1)
        XCTAssertEqual(s.counters.retries, 0)
        XCTAssertEqual(s.lastError?.kind, .exception)
        XCTAssertTrue(s.lastError!.message.contains("exception 2"), s.lastError!.message)
    }

    func testWrongSlaveDiagnosis() {
        client.persistentFault = .otherUnit
        poller.runCycle()
        let s = poller.snapshot()
        XCTAssertEqual(s.lastError?.kind, .wrongSlave)
        XCTAssertTrue(s.lastError!.message.contains("unit 2 answered instead of unit 1"), s.lastError!.message)
    }

    func testRelayWriteAndReadBack() throws {
        poller.runCycle()
        let opened = try poller.performRelay(closed: false).get()
        XCTAssertFalse(opened.closed)
        XCTAssertFalse(meter.isRelayClosed)
        XCTAssertEqual(poller.snapshot().relay?.closed, false)
        clock.advance(seconds: 1)
        poller.runCycle()
        // With the relay open the simulator's load drops to zero.
        XCTAssertEqual(poller.snapshot().value(Register.activePowerTotal), 0)
        XCTAssertTrue(try poller.performRelay(closed: true).get().closed)
    }

    func testSnapshotIsCachedPerGeneration() {
        poller.runCycle()
        let a = poller.snapshot()
        let b = poller.snapshot()
        XCTAssertEqual(a.generation, b.generation)
        clock.advance(seconds: 1)
        poller.runCycle()
        XCTAssertEqual(poller.snapshot().generation, a.generation + 1)
    }

    /// Issue 18: each generation's snapshot is built into the previous one's storage when nobody holds that one;
    /// a snapshot a reader still holds keeps its values (copy on write), and a rebuilt one has the new values.
    func testSnapshotsHeldByReadersKeepTheirValuesWhenTheNextIsBuiltInPlace() throws {
        poller.runCycle()
        let held = poller.snapshot()
        let heldPower = try XCTUnwrap(held.value(Register.activePowerTotal))
        XCTAssertGreaterThan(heldPower, 0)
        XCTAssertEqual(held.parameters?.controlMode, .remote)
        XCTAssertNoThrow(try poller.performParameterWrite(start: KPM33BMap.controlMode, values: [0xDD11]).get())
        _ = try poller.performRelay(closed: false).get()
        for _ in 0..<3 {  // generations nobody holds between them: rebuilt in place
            clock.advance(seconds: 1)
            poller.runCycle()
            _ = poller.snapshot()
        }
        let now = poller.snapshot()
        XCTAssertGreaterThan(now.generation, held.generation + 2)
        XCTAssertEqual(now.value(Register.activePowerTotal), 0)
        XCTAssertEqual(now.relay?.closed, false)
        XCTAssertEqual(now.parameters?.controlMode, .local)
        XCTAssertEqual(now.parameters?.serialNumber, "33B0000126042")
        XCTAssertEqual(now.value(Register.voltageA), meter.float(Register.voltageA))
        // The held one is as it was.
        XCTAssertEqual(held.value(Register.activePowerTotal), heldPower)
        XCTAssertEqual(held.relay?.closed, true)
        XCTAssertEqual(held.parameters?.controlMode, .remote)
    }

    func testThreadedLoopServesRelayCommands() async throws {
        let meter = SimulatedMeter()
        let client = LoopbackClient(meter: meter)
        var plan = PollPlan()
        plan.cycleSeconds = 0.05
        let live = MeterPoller(client: client, unit: 1, plan: plan, lineDescription: "9600 8E1")
        try live.start()
        defer { live.stop() }
        let state = try await live.setRelay(closed: false)
        XCTAssertFalse(state.closed)
        XCTAssertFalse(meter.isRelayClosed)
        live.stop()
        do {
            _ = try await live.setRelay(closed: true)
            XCTFail("a stopped loop must refuse commands")
        } catch let error as MeterCommandError {
            XCTAssertEqual(error, .notRunning)
        }
    }

    /// The thread is injected; when it cannot be created, start says so and the loop never runs inline.
    func testStartFailsWhenTheThreadCannotBeCreated() {
        let meter = SimulatedMeter()
        let client = LoopbackClient(meter: meter)
        let live = MeterPoller(client: client, unit: 1, lineDescription: "9600 8E1",
                               startThread: { (name, _) throws(SystemError) in
                                   throw SystemError(operation: "pthread_create", errno: EAGAIN, detail: name)
                               })
        XCTAssertThrowsError(try live.start()) { XCTAssertEqual(($0 as? SystemError)?.detail, "meterext-poll") }
        XCTAssertFalse(live.isRunning)
        XCTAssertEqual(live.lastCycleEndNanos, 0, "no cycle ran on the caller's thread")
    }

    /// Parameter writes go through the running loop (the exchange's only writer), and the loop re-reads the
    /// parameter area after them.
    func testThreadedLoopServesParameterWrites() async throws {
        let meter = SimulatedMeter()
        let client = LoopbackClient(meter: meter)
        var plan = PollPlan()
        plan.cycleSeconds = 0.05
        let live = MeterPoller(client: client, unit: 1, plan: plan, lineDescription: "9600 8E1")
        try live.start()
        defer { live.stop() }
        try await live.writeParameters(start: KPM33BMap.controlMode, values: [KPM33BMap.controlModeLocal])
        XCTAssertEqual(meter.controlModeWord, KPM33BMap.controlModeLocal)
        var seen: UInt16?
        for _ in 0..<100 where seen != KPM33BMap.controlModeLocal {
            try await Task.sleep(nanoseconds: 20_000_000)
            seen = live.snapshot().parameters?.controlModeWord
        }
        XCTAssertEqual(seen, KPM33BMap.controlModeLocal, "the loop re-read the parameters after the write")
        live.stop()
        do {
            try await live.writeParameters(start: KPM33BMap.controlMode, values: [KPM33BMap.controlModeRemote])
            XCTFail("a stopped loop must refuse commands")
        } catch let error as MeterCommandError {
            XCTAssertEqual(error, .notRunning)
        }
    }
}

final class SimulatedMeterTests: XCTestCase {
    func request(_ meter: SimulatedMeter, _ r: ModbusRequest, now: Double = 0) -> [UInt8] {
        var buf = [UInt8](repeating: 0, count: ModbusLimits.maxADU)
        let n = buf.withUnsafeMutableBytes { meter.handle(r, now: now, into: $0) }
        return Array(buf[0..<n])
    }

    func testUnmappedAddressesRaiseException2() {
        let meter = SimulatedMeter()
        let reply = request(meter, .readHoldingRegisters(unit: 1, start: 0x0003, count: 1))
        XCTAssertEqual(Array(reply.prefix(3)), [0x01, 0x83, 0x02])
        // A read spanning a hole is refused too.
        XCTAssertEqual(request(meter, .readHoldingRegisters(unit: 1, start: 0x0000, count: 0x27))[1], 0x83)
        XCTAssertEqual(request(meter, .readHoldingRegisters(unit: 1, start: 0x0030, count: 52))[1], 0x03)
    }

    func testOtherUnitsAreIgnored() {
        XCTAssertEqual(request(SimulatedMeter(unit: 1), .readHoldingRegisters(unit: 2, start: 0x30, count: 2)), [])
    }

    func testEnergyOnlyGrowsAndFollowsLoad() {
        let meter = SimulatedMeter()
        meter.scenario.wobble = false
        _ = request(meter, .readHoldingRegisters(unit: 1, start: 0x30, count: 2), now: 0)
        let before = meter.float(Register.forwardActiveEnergy)
        _ = request(meter, .readHoldingRegisters(unit: 1, start: 0x30, count: 2), now: 3600)
        let after = meter.float(Register.forwardActiveEnergy)
        // 820 + 640 + 1210 W for one hour = 2.67 kWh.
        XCTAssertEqual(after - before, 2.67, accuracy: 0.01)
        XCTAssertEqual(meter.float(Register.activePowerTotal), 2670, accuracy: 0.5)
    }

    func testExportShowsAsNegativeTotalAndReverseEnergy() {
        let meter = SimulatedMeter()
        meter.scenario.wobble = false
        meter.scenario.load = (-1000, -500, 200)
        _ = request(meter, .readHoldingRegisters(unit: 1, start: 0x30, count: 2), now: 0)
        let before = meter.float(Register.reverseActiveEnergy)
        _ = request(meter, .readHoldingRegisters(unit: 1, start: 0x30, count: 2), now: 3600)
        XCTAssertEqual(meter.float(Register.activePowerTotal), -1300, accuracy: 0.5)
        XCTAssertEqual(meter.float(Register.reverseActiveEnergy) - before, 1.5, accuracy: 0.01)
    }

    func testParameterWrites() {
        let meter = SimulatedMeter()
        let ok = request(meter, .writeMultipleRegisters(unit: 1, start: KPM33BMap.controlMode, values: [0xDD11]))
        XCTAssertEqual(ok[1], 0x10)
        XCTAssertEqual(meter.controlModeWord, KPM33BMap.controlModeLocal)
        let bad = request(meter, .writeMultipleRegisters(unit: 1, start: KPM33BMap.controlMode, values: [0x1234]))
        XCTAssertEqual(Array(bad.prefix(3)), [0x01, 0x90, 0x03])
        let readOnly = request(meter, .writeMultipleRegisters(unit: 1, start: KPM33BMap.serialNumber, values: [1]))
        XCTAssertEqual(Array(readOnly.prefix(3)), [0x01, 0x90, 0x02])
    }

    func testRelayCoilLikeTheManual() {
        let meter = SimulatedMeter()
        XCTAssertEqual(request(meter, .readCoils(unit: 1, start: 1, count: 1)).prefix(4), [0x01, 0x01, 0x01, 0x07])
        XCTAssertEqual(request(meter, .writeSingleCoil(unit: 1, address: 1, on: false)),
                       [0x01, 0x05, 0x00, 0x01, 0x00, 0x00, 0x9C, 0x0A])
        XCTAssertFalse(meter.isRelayClosed)
    }
}
