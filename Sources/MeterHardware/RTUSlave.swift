import Platform
import ModbusCore
#if canImport(Glibc)
import Glibc
#endif

/// Bytes in and out of a serial line, as the slave loop needs them.
public protocol ByteChannel: AnyObject {
    /// Reads what is available, waiting at most `timeoutNanos`; 0 on timeout.
    func receive(into buffer: UnsafeMutableRawBufferPointer, timeoutNanos: UInt64) throws(SystemError) -> Int
    func transmit(_ bytes: UnsafeRawBufferPointer) throws(SystemError)
}

/// Faults a simulated slave can inject, each with a probability per reply. Used by soak runs and tests.
public struct SlaveFaults: Sendable, Equatable {
    public var crcError = 0.0
    public var silence = 0.0
    /// Reply after the master's response timeout.
    public var lateReply = 0.0
    public var leadingGarbage = 0.0
    public var trailingGarbage = 0.0
    public var exception = 0.0
    /// Split the reply into two writes with a short pause.
    public var splitReply = 0.0
    public var lateReplyNanos: UInt64 = 1_500_000_000

    public init() {}

    public var isEmpty: Bool { self == SlaveFaults() }

    /// `crc=0.05,silence=0.02,late=0.01,garbage=0.02,trailing=0.02,exception=0.01,split=0.1`
    public init(parsing text: String) throws(SystemError) {
        for item in text.split(separator: ",") where !item.isEmpty {
            let parts = item.split(separator: "=", maxSplits: 1)
            guard parts.count == 2, let p = Double(parts[1]), p >= 0, p <= 1 else {
                throw SystemError(operation: "parse faults", errno: EINVAL, detail: "'\(item)' is not NAME=PROBABILITY")
            }
            switch parts[0] {
            case "crc": crcError = p
            case "silence": silence = p
            case "late": lateReply = p
            case "garbage": leadingGarbage = p
            case "trailing": trailingGarbage = p
            case "exception": exception = p
            case "split": splitReply = p
            default:
                throw SystemError(operation: "parse faults", errno: EINVAL,
                                  detail: "unknown fault '\(parts[0])' (crc, silence, late, garbage, trailing, exception, split)")
            }
        }
    }
}

/// A Modbus RTU slave loop: frames requests by parsing and by t3.5 silence, asks `handler` for the reply, and
/// writes it after the inter-frame gap. Runs until `stop()`.
public final class RTUSlave {
    public typealias Handler = (ModbusRequest, UnsafeMutableRawBufferPointer) -> Int

    private let channel: ByteChannel
    private let timing: FrameTiming
    private let handler: Handler
    public var faults: SlaveFaults
    /// Called after each reply went out (the simulator applies a written address then).
    public var afterReply: (() -> Void)?
    public private(set) var requestsServed: UInt64 = 0
    public private(set) var faultsInjected: UInt64 = 0
    private var stopping = false
    private var rng: UInt64 = 0x9E37_79B9_7F4A_7C15

    public init(channel: ByteChannel, timing: FrameTiming, faults: SlaveFaults = SlaveFaults(),
                handler: @escaping Handler) {
        self.channel = channel
        self.timing = timing
        self.faults = faults
        self.handler = handler
    }

    public func stop() { stopping = true }

    public func run() throws(SystemError) {
        let input = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 * ModbusLimits.maxADU, alignment: 8)
        let reply = UnsafeMutableRawBufferPointer.allocate(byteCount: ModbusLimits.maxADU + 16, alignment: 8)
        defer { input.deallocate(); reply.deallocate() }
        var count = 0
        var lastByte: UInt64 = 0
        while !stopping {
            let old = count
            let n = try channel.receive(into: UnsafeMutableRawBufferPointer(rebasing: input[old...]),
                                        timeoutNanos: 100_000_000)
            if n == 0 { continue }
            let now = MonotonicClock.nowNanos()
            // Silence longer than t3.5 ends any frame in progress (with a floor for scheduling jitter): keep only
            // the new bytes.
            if old > 0 && now - lastByte > max(timing.t35Nanos, 20_000_000) {
                input.baseAddress!.copyMemory(from: input.baseAddress! + old, byteCount: n)
                count = n
            } else {
                count = old + n
            }
            lastByte = now
            while count > 0 {
                let parsed = SlaveCodec.parse(UnsafeRawBufferPointer(rebasing: input[0..<count]))
                var consumed = 0
                switch parsed {
                case .needMore:
                    break
                case .skip:
                    consumed = 1
                case .unsupported(let unit, let function, let length):
                    consumed = length
                    let r = SlaveCodec.encodeException(unit: unit, function: function, code: .illegalFunction,
                                                       into: reply)
                    try respond(UnsafeRawBufferPointer(rebasing: reply[0..<r]), request: nil)
                case .request(let request, let length):
                    consumed = length
                    let r = handler(request, reply)
                    if r > 0 {
                        try respond(UnsafeRawBufferPointer(rebasing: reply[0..<r]), request: request)
                        afterReply?()
                    }
                    requestsServed += 1
                }
                if consumed == 0 { break }
                input.baseAddress!.copyMemory(from: input.baseAddress! + consumed, byteCount: count - consumed)
                count -= consumed
            }
            if count >= input.count - ModbusLimits.maxADU { count = 0 }
        }
    }

    private func chance(_ p: Double) -> Bool {
        guard p > 0 else { return false }
        rng ^= rng << 13
        rng ^= rng >> 7
        rng ^= rng << 17
        return Double(rng % 1_000_000) / 1_000_000 < p
    }

    private func respond(_ frame: UnsafeRawBufferPointer, request: ModbusRequest?) throws(SystemError) {
        // Frames are separated by at least t3.5 of silence.
        MonotonicClock.sleep(untilNanos: MonotonicClock.nowNanos() + timing.t35Nanos)
        guard !faults.isEmpty else {
            try channel.transmit(frame)
            return
        }
        var bytes = Array(frame)
        if chance(faults.silence) { faultsInjected += 1; return }
        if let request, chance(faults.exception) {
            faultsInjected += 1
            var w = [UInt8](repeating: 0, count: ModbusLimits.maxADU)
            let n = w.withUnsafeMutableBytes {
                SlaveCodec.encodeException(unit: request.unit, function: request.function.rawValue,
                                           code: .serverDeviceBusy, into: $0)
            }
            bytes = Array(w[0..<n])
        }
        if chance(faults.crcError) { faultsInjected += 1; bytes[bytes.count - 1] ^= 0x5A }
        if chance(faults.leadingGarbage) { faultsInjected += 1; bytes = [0x00, 0xFF, 0x7E] + bytes }
        if chance(faults.trailingGarbage) { faultsInjected += 1; bytes += [0x00, 0x13] }
        if chance(faults.lateReply) {
            faultsInjected += 1
            MonotonicClock.sleep(untilNanos: MonotonicClock.nowNanos() + faults.lateReplyNanos)
        }
        if chance(faults.splitReply), bytes.count > 2 {
            faultsInjected += 1
            let half = bytes.count / 2
            try transmit(bytes[0..<half])
            MonotonicClock.sleep(untilNanos: MonotonicClock.nowNanos() + 3 * timing.characterNanos)
            try transmit(bytes[half...])
            return
        }
        try transmit(bytes[...])
    }

    private func transmit(_ bytes: ArraySlice<UInt8>) throws(SystemError) {
        var failure: SystemError?
        bytes.withUnsafeBytes { b in
            do throws(SystemError) { try channel.transmit(b) } catch { failure = error }
        }
        if let failure { throw failure }
    }
}
