// Fuzz target: the slave-side request parser `SlaveCodec.parse`, consumed the way `RTUSlave` consumes it, with
// every request it accepts answered by the KPM33B simulator.
//
// Input: bytes as they arrive on the slave's line (the first byte picks the simulator's unit, so frames for it
// are found quickly). Invariants: an accepted request or unsupported frame lies inside the input and has a valid
// CRC; an accepted request re-encodes to exactly the bytes it was parsed from; `needMore` is only answered while
// a frame could still complete; the simulator's reply fits its buffer, has a valid CRC, and a master waiting for
// that request accepts it (as a reply or as an exception); no crash, no sanitizer report.
import Glibc
import KPM33B
import ModbusCore

private let reply = UnsafeMutableRawBufferPointer.allocate(byteCount: ModbusLimits.maxADU + 16, alignment: 8)
private let encoded = UnsafeMutableRawBufferPointer.allocate(byteCount: 2 * ModbusLimits.maxADU, alignment: 8)
private let masterBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 2 * ModbusLimits.maxADU, alignment: 8)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSlaveCodec(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let all = UnsafeRawBufferPointer(start: data, count: size)
    guard size > 0 else { return 0 }
    let meter = SimulatedMeter(unit: 1 + all[0] % 247)
    var input = UnsafeRawBufferPointer(rebasing: all[1...])
    var clock = 0.0
    while !input.isEmpty {
        let parsed = SlaveCodec.parse(input)
        var consumed = 0
        switch parsed {
        case .needMore:
            // Only a frame that could still complete may ask for more: at most one ADU plus the FC16 count byte.
            fuzzCheck(input.count < 9 + 255, "needMore with \(input.count) bytes buffered")
        case .skip:
            consumed = 1
        case .unsupported(let unit, let function, let length):
            fuzzCheck(length == 8 && length <= input.count, "unsupported frame of \(length) bytes")
            fuzzCheck(FunctionCode(rawValue: function) == nil, "function \(function) is supported")
            fuzzCheck(unit == input[0] && CRC16.isValid(UnsafeRawBufferPointer(rebasing: input[0..<length])),
                      "unsupported frame with a bad CRC")
            consumed = length
        case .request(let request, let length):
            fuzzCheck(length >= 8 && length <= input.count, "request of \(length) bytes in \(input.count)")
            let frame = UnsafeRawBufferPointer(rebasing: input[0..<length])
            fuzzCheck(CRC16.isValid(frame), "accepted a request with a bad CRC")
            // `encode` assumes at most one ADU; parse accepts FC16 byte counts up to 255, so encode into a larger
            // buffer and compare.
            if length <= ModbusLimits.maxADU {
                let n = request.encode(into: encoded)
                fuzzCheck(n == length && memcmp(encoded.baseAddress!, frame.baseAddress!, n) == 0,
                          "\(request) re-encodes to \(n) bytes that differ from the \(length) parsed")
            }
            clock += 0.25
            let r = meter.handle(request, now: clock, into: reply)
            fuzzCheck(r >= 0 && r <= reply.count, "reply length \(r)")
            if r > 0 {
                let answer = UnsafeRawBufferPointer(rebasing: reply[0..<r])
                fuzzCheck(CRC16.isValid(answer), "simulator reply with a bad CRC")
                if request.validationError == nil {
                    var master = MasterTransaction(buffer: masterBuffer)
                    _ = master.begin(request, timing: LineSettings.meterDefault.timing, configuration: .init(), sentAt: 0)
                    switch master.received(answer, at: 1_000_000) {
                    case .complete, .failed(.exception): break
                    case let other: fuzzFail("the master answers \(other) to the simulator's reply to \(request)")
                    }
                }
                meter.commitPendingAddress()
            }
            consumed = length
        }
        if consumed == 0 { break }
        input = UnsafeRawBufferPointer(rebasing: input[consumed...])
    }
    return 0
}
