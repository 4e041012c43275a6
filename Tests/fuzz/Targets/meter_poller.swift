// Fuzz target: everything between the RS485 bytes and the JSON a client gets — `MasterTransaction` framing, the
// KPM33B poll cycle decoding replies into a snapshot (floats, relay bits, parameters, history), and `meter_reading`,
// `system_status`, `meter_info` and `relay_status` built from that snapshot.
//
// A fake `ModbusClient` answers each request the poller sends from the input: one mode byte picks a well-formed
// reply whose payload comes from the input (so decoding sees arbitrary values: NaN, infinities, garbage serial
// numbers and clocks), raw bytes through the real `MasterTransaction`, an exception, or silence. Time advances by an
// input-chosen step per cycle. Invariants: every reply is one JSON object; an offline meter never has data served
// (`meter_reading` without OBIS entries, `relay_status` an error); a snapshot's groups have their documented sizes;
// counters add up; no crash, no sanitizer report.
import Dispatch
import FoundationEssentials
import KPM33B
import MeterService
import MeterTestSupport
import ModbusCore
import Synchronization

private let rx = UnsafeMutableRawBufferPointer.allocate(byteCount: 2 * ModbusLimits.maxADU, alignment: 8)
private let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 2 * ModbusLimits.maxADU, alignment: 8)

private final class FuzzBus: ModbusClient {
    var reader: FuzzReader
    var statistics = ModbusStatistics()
    var machine = MasterTransaction(buffer: rx)

    init(_ r: FuzzReader) { reader = r }

    func execute(_ q: ModbusRequest) -> ModbusResult {
        statistics.transactions += 1
        let result = attempt(q)
        switch result {
        case .success: statistics.succeeded += 1
        case .failure(let f): statistics.count(f)
        }
        return result
    }

    private func attempt(_ q: ModbusRequest) -> ModbusResult {
        var n = 0
        switch reader.byte() % 4 {
        case 0: // a well-formed reply carrying input bytes
            switch q.function {
            case .readHoldingRegisters:
                n = SlaveCodec.encodeRegisters(unit: q.unit, count: Int(q.quantity), into: scratch) { _ in self.reader.u16() }
            case .readCoils:
                n = SlaveCodec.encodeCoils(unit: q.unit, count: Int(q.quantity), into: scratch) { _ in self.reader.bool() }
            case .writeSingleCoil, .writeMultipleRegisters:
                n = SlaveCodec.encodeWriteEcho(q, into: scratch)
            }
        case 1: // raw bytes
            let raw = reader.take(Int(reader.byte()))
            scratch.copyMemory(from: raw)
            n = raw.count
        case 2:
            n = SlaveCodec.encodeException(unit: q.unit, function: q.function.rawValue,
                                           code: ExceptionCode(rawValue: 1 + reader.byte() % 6) ?? .illegalDataAddress,
                                           into: scratch)
        default:
            n = 0
        }
        _ = machine.begin(q, timing: LineSettings.meterDefault.timing, configuration: .init(), sentAt: 1_000)
        var action = machine.received(UnsafeRawBufferPointer(rebasing: scratch[0..<n]), at: 2_000)
        if case .waitForMore = action { action = machine.timerFired(at: UInt64.max / 2) }
        switch action {
        case .complete(let frame): return .success(UnsafeRawBufferPointer(rebasing: rx[frame]))
        case .failed(let f): return .failure(.transaction(f))
        case .waitForMore: fuzzFail("still waiting after the deadline")
        }
    }
}

private final class Clock: Sendable {
    let nanos = Atomic<UInt64>(1_000_000_000)
}

private func contains(_ haystack: [UInt8], _ needle: StaticString) -> Bool {
    let n = needle.utf8CodeUnitCount
    guard haystack.count >= n else { return false }
    outer: for i in 0...(haystack.count - n) {
        for k in 0..<n where haystack[i + k] != needle.utf8Start[k] { continue outer }
        return true
    }
    return false
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzMeterPoller(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    var r = FuzzReader(UnsafeRawBufferPointer(start: data, count: size))
    let unit = 1 + r.byte() % 247
    let bus = FuzzBus(r)
    let clock = Clock()
    let pollClock = PollClock(monotonicNanos: { clock.nanos.load(ordering: .relaxed) },
                              unixSeconds: { Int64(clock.nanos.load(ordering: .relaxed) / 1_000_000_000) })
    let poller = MeterPoller(client: bus, unit: unit, plan: PollPlan(), lineDescription: "fuzz", clock: pollClock)
    let api = MeterAPI(
        link: poller, settings: InMemoryDeviceSettings(), system: RecordingSystemControl(),
        network: FixedNetworkInfo(info: nil, mac: nil),
        identity: DeviceIdentity(softwareVersion: "fuzz", hardwareVersion: "fuzz"),
        calendar: UTCSettlementCalendar(), now: { 1_763_719_999 })
    let dispatcher = api.dispatcher()
    var cycles = 0
    repeat {
        poller.runCycle()
        cycles += 1
        let s = poller.snapshot()
        if let b = s.basic { fuzzCheck(b.count == 26, "basic has \(b.count) values") }
        if let e = s.energy { fuzzCheck(e.count == 26, "energy has \(e.count) values") }
        if let d = s.demand { fuzzCheck(d.count == 3, "demand has \(d.count) values") }
        if let h = s.history { fuzzCheck(h.count == 130, "history has \(h.count) values") }
        fuzzCheck(s.counters.succeeded + s.counters.failedAttempts == s.counters.transactions,
                  "counters do not add up: \(s.counters)")
        for cmd in ["meter_reading", "system_status", "meter_info", "relay_status"] {
            guard case .reply(let reply) = dispatcher.dispatch(body: Array(#"{"cmd":"\#(cmd)"}"#.utf8)) else {
                fuzzFail("\(cmd) went async")
            }
            fuzzCheck(StrictJSON.isObject(reply.body), "\(cmd) reply is not one JSON object: "
                + String(decoding: reply.body, as: UTF8.self))
            if s.health == .offline && (cmd == "meter_reading" || cmd == "relay_status") {
                fuzzCheck(!contains(reply.body, #""OBIS""#) && !contains(reply.body, #""phases""#),
                          "\(cmd) served data while the meter is offline: " + String(decoding: reply.body, as: UTF8.self))
            }
        }
        // Next cycle after 0.25–64 s.
        clock.nanos.add(250_000_000 * (1 + UInt64(bus.reader.byte())), ordering: .relaxed)
    } while !bus.reader.isEmpty && cycles < 64
    return 0
}
