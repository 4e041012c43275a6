// Fuzz target (issue 12): any value the meter can send is safe. Whole poll replies — well-formed, so every byte of
// every register reaches the decoder — run through `MeterPoller.runCycle`, the status engine (`StatusMonitor`, as
// the service runs it once a second, and `meter_status`), and the OBIS encoding (`meter_reading`, built and encoded
// exactly as the API does), plus `system_status` (link_errors). The service never feeds an implausible value to the
// status engine; a second engine here gets the raw values anyway (defence in depth: the engine itself must be total).
//
// Each float register's value is picked by one input byte: an extreme from a table (±3e38, ±1e20, NaN, ±∞,
// subnormals, every plausibility bound and its neighbours one ulp away, ordinary values) or four raw input bytes.
// Word registers (parameters: serial number, clock, control mode, forced power, load threshold, prepaid floats) take
// raw input words. A request now and then fails (silence, exception) so health moves between online, stale and
// offline. Invariants: never a crash; every reply is one JSON object; every served OBIS value is an integer string
// that equals the conversion of a *plausible* register value; a compatibility quantity that is implausible empties
// `data` and the reason names it; the implausible counter never goes backwards.
import FoundationEssentials
import KPM33B
import MeterService
import MeterTestSupport
import MeterStatus
import ModbusCore
import Synchronization

private let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 2 * ModbusLimits.maxADU, alignment: 8)
private let rx = UnsafeMutableRawBufferPointer.allocate(byteCount: 2 * ModbusLimits.maxADU, alignment: 8)

private let extremes: [Float] = {
    var v: [Float] = [3.0e38, -3.0e38, 1e20, -1e20, .greatestFiniteMagnitude, -.greatestFiniteMagnitude,
                      .infinity, -.infinity, .nan, -.nan, .signalingNaN, .leastNonzeroMagnitude,
                      -.leastNonzeroMagnitude, .leastNormalMagnitude, 0, -0.0, 230.4, 5.25, 1150, -95.5, 0.97, 49.98,
                      1520.125, 9.2e18, -9.3e18, 4.6e17, 1e9, 1e12]
    let ranges = [Plausibility.phaseVoltage, Plausibility.lineVoltage, Plausibility.current, Plausibility.phasePower,
                  Plausibility.totalPower, Plausibility.powerFactor, Plausibility.frequency, Plausibility.energy,
                  Plausibility.signedEnergy]
    for r in ranges {
        for b in [r.lowerBound, r.upperBound] { v += [b, b.nextUp, b.nextDown] }
    }
    return v
}()

private final class ValueBus: ModbusClient {
    var reader: FuzzReader
    var statistics = ModbusStatistics()
    var machine = MasterTransaction(buffer: rx)

    init(_ r: FuzzReader) { reader = r }

    func float() -> UInt32 {
        let pick = Int(reader.byte())
        return pick < extremes.count ? extremes[pick].bitPattern : reader.u32()
    }

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
        // Mostly a well-formed reply: the values are what this target is about.
        switch reader.byte() {
        case 0...239:
            switch q.function {
            case .readHoldingRegisters:
                let floats = q.start >= 0x0030
                var pending: UInt32 = 0
                n = SlaveCodec.encodeRegisters(unit: q.unit, count: Int(q.quantity), into: scratch) { k in
                    guard floats else { return self.reader.u16() }
                    if k % 2 == 0 {
                        pending = self.float()
                        return UInt16(pending >> 16)
                    }
                    return UInt16(pending & 0xFFFF)
                }
            case .readCoils:
                n = SlaveCodec.encodeCoils(unit: q.unit, count: Int(q.quantity), into: scratch) { _ in self.reader.bool() }
            case .writeSingleCoil, .writeMultipleRegisters:
                n = SlaveCodec.encodeWriteEcho(q, into: scratch)
            }
        case 240...247:
            n = SlaveCodec.encodeException(unit: q.unit, function: q.function.rawValue, code: .illegalDataAddress,
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

private struct Reading: Decodable {
    struct Meter: Decodable {
        var data: [Entry]
        var status: String
        var reason: String?
    }
    struct Entry: Decodable {
        var OBIS: String
        var scale: String
        var entry: [Sample]
    }
    struct Sample: Decodable { var ts: String; var val: String }
    var meter: [Meter]
}

private let definitions: [String: OBISDefinition] = {
    var d: [String: OBISDefinition] = [:]
    for def in OBISTable.compatibility + OBISTable.extended + OBISTable.history { d[def.code.description] = def }
    return d
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzMeterValues(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    var r = FuzzReader(UnsafeRawBufferPointer(start: data, count: size))
    let flags = r.byte()
    let bus = ValueBus(r)
    let clock = Clock()
    let pollClock = PollClock(monotonicNanos: { clock.nanos.load(ordering: .relaxed) },
                              unixSeconds: { Int64(clock.nanos.load(ordering: .relaxed) / 1_000_000_000) })
    let poller = MeterPoller(client: bus, unit: 1, plan: PollPlan(), lineDescription: "fuzz", clock: pollClock)
    let reported = Atomic<Int>(0)
    poller.onImplausibleValue = { register, value in
        fuzzCheck(!Plausibility.isPlausible(value, at: register.address), "plausible value reported: \(value)")
        _ = Plausibility.message(register, value: value)
        reported.add(1, ordering: .relaxed)
    }
    var config = StatusEngineConfig()
    config.minimumDuration = Double(flags & 3)
    let monitor = StatusMonitor(link: poller, config: config, prepaidMode: flags & 4 != 0)
    let api = MeterAPI(
        link: poller, settings: InMemoryDeviceSettings(), system: RecordingSystemControl(),
        network: FixedNetworkInfo(info: nil, mac: nil),
        identity: DeviceIdentity(softwareVersion: "fuzz", hardwareVersion: "fuzz"),
        operatingStatus: { monitor.amiCode() }, calendar: UTCSettlementCalendar(), now: { 1_763_719_999 })
    var registry = api.registry()
    StatusCommands(monitor: monitor).register(into: &registry)
    let dispatcher = api.dispatcher(registry: registry)
    let builder = MeterReadingBuilder(calendar: UTCSettlementCalendar())
    var rawEngine = StatusEngine(config: config)
    var lastImplausible: UInt64 = 0
    var cycles = 0
    repeat {
        poller.runCycle()
        cycles += 1
        let s = poller.snapshot()
        fuzzCheck(s.implausibleValues >= lastImplausible, "implausible counter went backwards")
        lastImplausible = s.implausibleValues
        // The status engine, as the service feeds it, and its text.
        let now = Double(clock.nanos.load(ordering: .relaxed)) / 1e9
        monitor.refresh(now: now)
        func raw(_ r: FloatRegister) -> Double? {
            switch s.reading(r) {
            case .plausible(let v), .implausible(let v): return Double(v)
            case .missing: return nil
            }
        }
        func three(_ a: FloatRegister, _ b: FloatRegister, _ c: FloatRegister) -> ThreePhase<Double>? {
            guard let x = raw(a), let y = raw(b), let z = raw(c) else { return nil }
            return ThreePhase(x, y, z)
        }
        let rawInputs = StatusInputs(
            relayClosed: s.relay.map { ThreePhase(all: $0.closed) }, controlMode: .remote,
            forcedPower: [.forcedOff, .forcedOn, .notForced, .unknown][Int(flags >> 4) % 4],
            loadThresholdKW: Double(s.parameters?.loadThresholdKW ?? 0),
            voltages: three(Register.voltageA, Register.voltageB, Register.voltageC),
            currents: three(Register.currentA, Register.currentB, Register.currentC),
            activePowers: three(Register.activePowerA, Register.activePowerB, Register.activePowerC),
            powerFactors: three(Register.powerFactorA, Register.powerFactorB, Register.powerFactorC),
            totalPowerFactor: raw(Register.powerFactorTotal),
            prepaidEnergyKWh: s.parameters.map { Double($0.prepaidEnergyKWh) }, prepaidMode: flags & 4 != 0)
        if let status = rawEngine.update(s.health == .offline ? nil : rawInputs, now: now) {
            for alert in status.alerts { fuzzCheck(!alert.detail.isEmpty, "alert \(alert.amiCode) without detail") }
        }
        for cmd in ["meter_status", "system_status", "meter_reading"] {
            guard case .reply(let reply) = dispatcher.dispatch(body: Array(#"{"cmd":"\#(cmd)"}"#.utf8)) else {
                fuzzFail("\(cmd) went async")
            }
            fuzzCheck(StrictJSON.isObject(reply.body), "\(cmd) reply is not one JSON object: "
                + String(decoding: reply.body, as: UTF8.self))
        }
        // The OBIS encoding, checked entry by entry against the snapshot.
        let body: [UInt8]
        do {
            body = try ReplyEncoder.encode(builder.reply(for: s, operatingStatus: monitor.amiCode()))
        } catch {
            fuzzFail("meter_reading could not be encoded: \(error)")
        }
        guard let reading = try? JSONDecoder().decode(Reading.self, from: Data(body)) else {
            fuzzFail("meter_reading does not decode: " + String(decoding: body, as: UTF8.self))
        }
        let m = reading.meter[0]
        for e in m.data {
            guard let val = Int64(e.entry[0].val) else { fuzzFail("\(e.OBIS): val \(e.entry[0].val) is not an integer") }
            guard let def = definitions[e.OBIS] else { continue }  // operating status
            guard let register = def.register else { continue }  // relay
            guard case .plausible(let v) = s.reading(register) else {
                fuzzFail("\(e.OBIS) served from an implausible or missing register: \(s.reading(register))")
            }
            fuzzCheck(MeterReadingBuilder.convert(v, for: def) == val, "\(e.OBIS): \(v) served as \(val)")
        }
        if s.health == .online || s.health == .stale {
            if let firstBad = OBISTable.compatibility.first(where: { builder.sample($0, in: s) == nil }) {
                fuzzCheck(m.data.isEmpty, "data served without \(firstBad.quantity)")
                let reason = m.reason ?? ""
                fuzzCheck(reason.contains(firstBad.quantity), "reason does not name \(firstBad.quantity): \(reason)")
                if case .implausible = s.reading(firstBad.register!) {
                    fuzzCheck(reason.contains("plausible range"), "reason does not say implausible: \(reason)")
                }
            } else {
                fuzzCheck(m.data.count >= 12, "complete reading with \(m.data.count) entries")
            }
        } else {
            fuzzCheck(m.data.isEmpty, "data served while \(s.health)")
        }
        clock.nanos.add(250_000_000 * (1 + UInt64(bus.reader.byte() & 31)), ordering: .relaxed)
    } while !bus.reader.isEmpty && cycles < 32
    return 0
}
