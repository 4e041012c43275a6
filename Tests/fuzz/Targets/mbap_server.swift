// Fuzz target: what a Modbus TCP master's bytes become (issue 17), the way ModbusTCPServer handles a connection:
// `MBAP.decode` on the buffered input, each frame's PDU through `ModbusTCPClassifier.classify`, snapshot reads
// answered by `SnapshotRegisters.readReply`, every reply framed by `MBAP.encode`. MBAP.swift is compiled into this
// fuzzer from Sources/ModbusTCP (the module itself needs SwiftNIO, which the fuzz build does not instrument).
//
// Input: one flags byte (bit 0: a meter has the unit, bit 1: the peer may write, bit 2: the energy block was read,
// bit 3: the basic block was read), then the bytes of the connection. Invariants: a decoded frame lies inside the
// buffered bytes and re-encodes to exactly them; `needMore` only while a frame could still complete; `invalid`
// ends the connection (nothing after it is read); every reply PDU fits an MBAP frame and is an exception for the
// request's function or, for a snapshot read, an FC03 reply of exactly 2·count bytes; writes are only forwarded for
// a peer that may write; a forwarded request encodes to an RTU frame with a valid CRC that the parser takes back
// unchanged; no crash, no sanitizer report.
import Glibc
import KPM33B
import ModbusCore

private let rtu = UnsafeMutableRawBufferPointer.allocate(byteCount: 2 * ModbusLimits.maxADU, alignment: 8)

private func registers(basic: Bool, energy: Bool) -> SnapshotRegisters {
    var s = MeterSnapshot()
    s.health = .online
    if basic { s.basic = [Float](repeating: 230.5, count: Int(KPM33BMap.basic.count) / 2) }
    if energy { s.energy = [Float](repeating: 1234.25, count: Int(KPM33BMap.energy.count) / 2) }
    return SnapshotRegisters(s)
}

private let served = [false, true].flatMap { basic in [false, true].map { registers(basic: basic, energy: $0) } }

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzMBAPServer(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let all = UnsafeRawBufferPointer(start: data, count: size)
    guard size > 0 else { return 0 }
    let flags = all[0]
    let knownUnit = flags & 1 != 0, mayWrite = flags & 2 != 0
    let snapshot = served[Int((flags >> 3) & 1) * 2 + Int((flags >> 2) & 1)]
    var input = Array(all[1...])
    // The server's connection buffer gets the bytes in reads of any size; deliver them in chunks of the size the
    // next input byte says, as a read could.
    var buffered: [UInt8] = []
    while !input.isEmpty {
        let chunk = min(input.count, 1 + Int(input[0]) % 64)
        buffered += input.prefix(chunk)
        input.removeFirst(chunk)
        decoding: while true {
            switch MBAP.decode(buffered) {
            case .needMore:
                fuzzCheck(buffered.count < MBAP.headerLength + MBAP.maxPDU + 1, "needMore with \(buffered.count) bytes")
                break decoding
            case .invalid:
                return 0  // the server closes the connection
            case .frame(let frame, let consumed):
                fuzzCheck(consumed >= MBAP.headerLength + 1 && consumed <= buffered.count,
                          "frame of \(consumed) bytes in \(buffered.count)")
                fuzzCheck(!frame.pdu.isEmpty && frame.pdu.count <= MBAP.maxPDU, "PDU of \(frame.pdu.count) bytes")
                fuzzCheck(MBAP.encode(transaction: frame.transaction, unit: frame.unit, pdu: frame.pdu)
                          == Array(buffered[0..<consumed]), "frame does not re-encode to its bytes")
                check(frame, knownUnit: knownUnit, mayWrite: mayWrite, snapshot: snapshot)
                buffered.removeFirst(consumed)
            }
        }
    }
    return 0
}

private func check(_ frame: MBAP.Frame, knownUnit: Bool, mayWrite: Bool, snapshot: SnapshotRegisters) {
    let fc = frame.pdu[0]
    func isException(_ pdu: [UInt8]) -> Bool { pdu.count == 2 && pdu[0] == fc | 0x80 }
    switch ModbusTCPClassifier.classify(unit: frame.unit, pdu: frame.pdu, knownUnit: knownUnit, mayWrite: mayWrite) {
    case .reply(let pdu):
        fuzzCheck(isException(pdu), "reply \(pdu) to function \(fc) is not its exception")
        _ = MBAP.encode(transaction: frame.transaction, unit: frame.unit, pdu: pdu)
    case .readSnapshot(let unit, let start, let count):
        fuzzCheck(knownUnit && unit == frame.unit && fc == 3, "snapshot read for unit \(unit), function \(fc)")
        if let pdu = snapshot.readReply(start: start, count: count) {
            fuzzCheck(pdu.count == 2 + 2 * Int(count) && pdu[0] == 3 && Int(pdu[1]) == 2 * Int(count),
                      "FC03 reply of \(pdu.count) bytes for \(count) registers")
            _ = MBAP.encode(transaction: frame.transaction, unit: frame.unit, pdu: pdu)
        }
    case .forward(let request):
        fuzzCheck(knownUnit && request.unit == frame.unit, "forwarded for unit \(request.unit)")
        let writes = request.function == .writeSingleCoil || request.function == .writeMultipleRegisters
        fuzzCheck(mayWrite || !writes, "a write forwarded for a peer that may not write")
        let n = request.encode(into: rtu)
        let bytes = UnsafeRawBufferPointer(rebasing: rtu[0..<n])
        fuzzCheck(n >= 8 && n <= ModbusLimits.maxADU && CRC16.isValid(bytes), "RTU frame of \(n) bytes")
        if case .request(let parsed, let length) = SlaveCodec.parse(bytes) {
            fuzzCheck(length == n && parsed == request, "\(request) does not parse back from its RTU frame")
        } else {
            fuzzFail("\(request) does not parse back from its RTU frame")
        }
        for outcome in [ForwardOutcome.exception(2), .failed] {
            let pdu = ModbusTCPClassifier.replyPDU(outcome, function: fc)
            fuzzCheck(isException(pdu), "reply \(pdu) for \(outcome)")
        }
    }
}
