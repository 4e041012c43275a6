// Fuzz target: the Modbus RTU reply framing of `MasterTransaction`, for every function code the master sends.
//
// Input layout (FuzzReader): a request (function selector, unit, start, quantity/value, timeouts, start time), then
// events until the input runs out: raw byte chunks, well-formed replies built from the request (optionally with one
// byte flipped, split into pieces), exception frames, frames for other units, and timer expiries, each after an
// arbitrary time step. The machine's receive buffer is owned here so the invariants can look into it.
//
// Invariants: a completed frame lies inside the received bytes, has a valid CRC, our unit, our function, the
// expected length and content, and is the first complete candidate in the buffer; a failure at the deadline means
// the buffer holds no complete candidate; `noReply` only when no byte arrived; the machine stops after it finishes;
// no crash, no sanitizer report.
import ModbusCore

private let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 2 * ModbusLimits.maxADU, alignment: 8)
private let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: ModbusLimits.maxADU + 8, alignment: 8)

private func makeRequest(_ r: inout FuzzReader) -> ModbusRequest {
    let unit = 1 + r.byte() % 247
    let start = r.u16()
    switch r.byte() % 4 {
    case 0:
        return .readCoils(unit: unit, start: start, count: 1 + r.u16() % ModbusLimits.maxReadCoils)
    case 1:
        return .readHoldingRegisters(unit: unit, start: start, count: 1 + r.u16() % ModbusLimits.maxReadRegisters)
    case 2:
        return .writeSingleCoil(unit: unit, address: start, on: r.bool())
    default:
        let n = 1 + Int(r.byte()) % Int(ModbusLimits.maxWriteRegisters)
        return .writeMultipleRegisters(unit: unit, start: start, values: (0..<n).map { UInt16($0) })
    }
}

/// The normal reply the meter would send, payload bytes from the input. Returns its length.
private func encodeReply(_ q: ModbusRequest, _ r: inout FuzzReader) -> Int {
    switch q.function {
    case .readHoldingRegisters:
        return SlaveCodec.encodeRegisters(unit: q.unit, count: Int(q.quantity), into: scratch) { _ in r.u16() }
    case .readCoils:
        return SlaveCodec.encodeCoils(unit: q.unit, count: Int(q.quantity), into: scratch) { _ in r.bool() }
    case .writeSingleCoil, .writeMultipleRegisters:
        return SlaveCodec.encodeWriteEcho(q, into: scratch)
    }
}

/// Independent scan: start of the first complete, CRC-valid reply candidate (normal or exception) in `bytes`.
private func firstCandidate(_ bytes: UnsafeRawBufferPointer, _ q: ModbusRequest) -> (start: Int, exception: Bool)? {
    guard bytes.count >= 2 else { return nil }
    for s in 0..<(bytes.count - 1) where bytes[s] == q.unit {
        let fc = bytes[s + 1]
        let len: Int
        if fc == q.function.rawValue { len = q.expectedReplyLength } else if fc == q.function.rawValue | 0x80 { len = 5 } else { continue }
        guard s + len <= bytes.count else { continue }
        if CRC16.isValid(UnsafeRawBufferPointer(rebasing: bytes[s..<(s + len)])) { return (s, fc != q.function.rawValue) }
    }
    return nil
}

private func contentMatches(_ f: UnsafeRawBufferPointer, _ q: ModbusRequest) -> Bool {
    switch q.function {
    case .readCoils, .readHoldingRegisters: return Int(f[2]) == q.expectedByteCount
    case .writeSingleCoil: return f.word(at: 2) == q.start && f.word(at: 4) == q.value
    case .writeMultipleRegisters: return f.word(at: 2) == q.start && f.word(at: 4) == UInt16(q.values.count)
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzMasterTransaction(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    var r = FuzzReader(UnsafeRawBufferPointer(start: data, count: size))
    let q = makeRequest(&r)
    fuzzCheck(q.validationError == nil, "generated an invalid request \(q)")
    let line = LineSettings(baud: LineSettings.meterBaudRates[Int(r.byte()) % 5], parity: .even)
    let config = MasterTransaction.Configuration(
        responseTimeoutNanos: 1_000_000 * (1 + UInt64(r.u16() % 2000)), interByteTimeoutNanos: 100_000 * (1 + UInt64(r.u16())))
    var now = UInt64(r.u32()) * 1000
    var machine = MasterTransaction(buffer: buffer)
    var action = machine.begin(q, timing: line.timing, configuration: config, sentAt: now)
    guard case .waitForMore(let deadline) = action else { fuzzFail("begin returned \(action)") }
    var fed = 0
    func feed(_ bytes: UnsafeRawBufferPointer, at t: UInt64) -> MasterTransaction.Action {
        fed += bytes.count
        return machine.received(bytes, at: t)
    }

    while !r.isEmpty, case .waitForMore(let d) = action {
        fuzzCheck(d == deadline, "deadline moved from \(deadline) to \(d)")
        let op = r.byte()
        // Time step: mostly small (inter-byte), sometimes past any timeout.
        let step = op & 0x40 != 0 ? UInt64(r.u16()) * 100_000 : UInt64(r.byte()) * 50_000
        now &+= step
        switch op % 6 {
        case 0, 1: // raw chunk
            action = feed(r.take(Int(r.byte() % 64)), at: now)
        case 2: // a well-formed reply, maybe damaged, delivered in two pieces
            var n = encodeReply(q, &r)
            if r.bool() { scratch[Int(r.byte()) % n] ^= (r.byte() | 1) }
            if r.byte() % 8 == 0 { n = max(1, n - Int(r.byte() % 4)) } // truncated
            let cut = Int(r.u16()) % (n + 1)
            action = feed(UnsafeRawBufferPointer(rebasing: scratch[0..<cut]), at: now)
            if case .waitForMore = action {
                now &+= UInt64(r.byte()) * 20_000
                action = feed(UnsafeRawBufferPointer(rebasing: scratch[cut..<n]), at: now)
            }
        case 3: // exception frame (or another function / another unit) with a valid CRC
            var w = ADUWriter(scratch)
            let kind = r.byte() % 3
            w.byte(kind == 2 ? q.unit &+ 1 &+ r.byte() % 200 : q.unit)
            w.byte(kind == 1 ? r.byte() : q.function.rawValue | 0x80)
            w.byte(r.byte())
            let n = w.finishWithCRC()
            action = feed(UnsafeRawBufferPointer(rebasing: scratch[0..<n]), at: now)
        default:
            action = machine.timerFired(at: now)
        }
    }
    // Let the deadline pass if the input ran out first.
    if case .waitForMore = action {
        now = max(now, deadline)
        action = machine.timerFired(at: now)
    }

    let received = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(buffer)[0..<machine.receivedCount])
    fuzzCheck(!machine.isActive, "machine still active after \(action)")
    switch action {
    case .waitForMore:
        fuzzFail("waitForMore after the deadline \(deadline) at \(now)")
    case .complete(let frame):
        fuzzCheck(frame.lowerBound >= 0 && frame.upperBound <= machine.receivedCount,
                  "frame \(frame) outside the \(machine.receivedCount) received bytes")
        fuzzCheck(frame.count == q.expectedReplyLength, "frame length \(frame.count) for \(q.function)")
        let f = UnsafeRawBufferPointer(rebasing: received[frame])
        fuzzCheck(CRC16.isValid(f), "completed with an invalid CRC")
        fuzzCheck(f[0] == q.unit && f[1] == q.function.rawValue, "completed with unit \(f[0]) function \(f[1])")
        fuzzCheck(contentMatches(f, q), "completed with content that does not match the request")
        let first = firstCandidate(received, q)
        fuzzCheck(first?.start == frame.lowerBound, "an earlier candidate at \(String(describing: first)) was skipped")
    case .failed(let failure):
        switch failure {
        case .exception:
            fuzzCheck(firstCandidate(received, q)?.exception == true, "exception without an exception frame")
        case .malformed where firstCandidate(received, q) != nil:
            // Only a valid normal frame whose content did not match may end as malformed.
            let c = firstCandidate(received, q)!
            fuzzCheck(!c.exception && !contentMatches(
                UnsafeRawBufferPointer(rebasing: received[c.start..<(c.start + q.expectedReplyLength)]), q),
                "malformed although the first candidate at \(c.start) is acceptable")
        default:
            if let c = firstCandidate(received, q) {
                fuzzFail("failed with \(failure) although a complete candidate sits at \(c.start)")
            }
        }
        if failure == .noReply { fuzzCheck(fed == 0, "noReply after \(fed) bytes") }
    }
    // A finished machine ignores more input.
    if case .failed(.malformed) = machine.received(UnsafeRawBufferPointer(rebasing: scratch[0..<1]), at: now) {} else {
        fuzzFail("a finished machine accepted bytes")
    }
    return 0
}
