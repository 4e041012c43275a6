/// One Modbus RTU master transaction as an I/O-free state machine.
///
/// The caller sends the request, then feeds every chunk of received bytes and every timer expiry in, together
/// with the monotonic time; the machine answers with what to do next. It never reads a clock, sleeps or does I/O,
/// so tests drive it with synthetic time, and the same code runs on the board.
///
/// Framing rules, in the order they apply:
/// - Leading junk is skipped: a reply may start at any byte that equals the unit address and is followed by the
///   expected function code (or its exception form).
/// - A candidate whose CRC fails is counted and scanning goes on past its first byte, so garbage that happens to
///   look like a frame start cannot hide the real reply behind it.
/// - A gap longer than `interByteTimeoutNanos` inside a partial frame breaks that frame: its bytes are dropped and
///   the machine waits for a fresh one until the deadline. The spec's t1.5 is far below what a Linux tty (or a
///   USB adapter's latency timer) can resolve, so the gap limit is configurable and defaults well above t3.5.
/// - At the deadline, what was seen decides the error: a CRC failure, a valid frame from another unit or with
///   another function, bytes that never formed a frame, or nothing at all.
///
/// The receive buffer is owned by the caller and reused; no allocation happens per transaction.
public struct MasterTransaction {
    public enum Failure: Equatable, Sendable {
        /// Nothing arrived before the deadline.
        case noReply
        /// Some bytes of a plausible reply arrived, but not all of it.
        case incompleteReply(received: Int)
        /// A frame of the right length arrived but its CRC did not match (noise, parity or A/B swapped).
        case crcMismatch
        /// A valid frame from another unit address.
        case wrongSlave(UInt8)
        /// A valid frame from our unit with another function code.
        case wrongFunction(UInt8)
        /// The meter answered with a Modbus exception.
        case exception(UInt8)
        /// Bytes arrived that never formed a valid frame, or a valid frame had the wrong content.
        case malformed
    }

    public enum Action: Equatable, Sendable {
        /// Keep reading; call `timerFired` at `deadline` if nothing arrives before it.
        case waitForMore(deadline: UInt64)
        /// A valid reply sits in the buffer at `frame` (address … CRC). Its data starts at `frame.lowerBound + 2`.
        case complete(frame: Range<Int>)
        case failed(Failure)
    }

    public struct Configuration: Sendable {
        /// From the end of the request to the first byte of the reply.
        public var responseTimeoutNanos: UInt64
        /// Longest silence tolerated inside one reply frame.
        public var interByteTimeoutNanos: UInt64

        public init(responseTimeoutNanos: UInt64 = 600_000_000, interByteTimeoutNanos: UInt64 = 50_000_000) {
            self.responseTimeoutNanos = responseTimeoutNanos
            self.interByteTimeoutNanos = interByteTimeoutNanos
        }
    }

    private let buffer: UnsafeMutableRawBufferPointer
    private var count = 0
    private var unit: UInt8 = 0
    private var function: UInt8 = 0
    private var expectedLength = 0
    private var expectedByteCount = 0
    /// FC05/FC16 replies echo the request: these words must match.
    private var echo: (UInt16, UInt16) = (0, 0)
    private var characterNanos: UInt64 = 0
    private var configuration = Configuration()
    private var deadline: UInt64 = 0
    private var lastByteAt: UInt64 = 0
    private var crcFailures = 0
    private var brokenFrames = 0
    public private(set) var isActive = false

    /// `buffer` must be at least `2 * ModbusLimits.maxADU` bytes so a full reply fits behind leading junk.
    public init(buffer: UnsafeMutableRawBufferPointer) {
        precondition(buffer.count >= 2 * ModbusLimits.maxADU, "receive buffer too small")
        self.buffer = buffer
    }

    /// Frames dropped because of an inter-byte gap in the current transaction.
    public var interruptedFrames: Int { brokenFrames }
    /// Candidate frames with a bad CRC in the current transaction.
    public var crcFailureCount: Int { crcFailures }
    public var receivedCount: Int { count }
    var deadlineForTests: UInt64 { deadline }

    /// Starts waiting for the reply to `request`, whose last byte left the line at `sentAt`.
    public mutating func begin(_ request: ModbusRequest, timing: FrameTiming, configuration: Configuration,
                               sentAt: UInt64) -> Action {
        count = 0
        crcFailures = 0
        brokenFrames = 0
        unit = request.unit
        function = request.function.rawValue
        expectedLength = request.expectedReplyLength
        expectedByteCount = request.expectedByteCount
        switch request.function {
        case .writeSingleCoil: echo = (request.start, request.value)
        case .writeMultipleRegisters: echo = (request.start, UInt16(request.values.count))
        default: echo = (0, 0)
        }
        characterNanos = timing.characterNanos
        self.configuration = configuration
        // The whole reply must have arrived by: timeout to first byte + its time on the wire + one gap allowance.
        deadline = sentAt &+ configuration.responseTimeoutNanos &+ timing.wireNanos(bytes: expectedLength)
            &+ configuration.interByteTimeoutNanos
        lastByteAt = sentAt
        isActive = true
        return .waitForMore(deadline: deadline)
    }

    /// Feeds bytes that arrived at monotonic time `now` (copied into the machine's buffer in bulk). Equivalent to
    /// reading them into `receiveSpace()` and calling `received(count:at:)`, however the bytes are split.
    public mutating func received(_ bytes: UnsafeRawBufferPointer, at now: UInt64) -> Action {
        guard isActive else { return .failed(.malformed) }
        noteArrival(at: now)
        var rest = bytes
        while !rest.isEmpty {
            if count == buffer.count { compact() }
            let n = min(rest.count, buffer.count - count)
            (buffer.baseAddress! + count).copyMemory(from: rest.baseAddress!, byteCount: n)
            count += n
            rest = UnsafeRawBufferPointer(rebasing: rest[n...])
        }
        return evaluate(now: now)
    }

    /// Where the next read should put its bytes: the free end of the machine's buffer (never empty), so the
    /// executor reads straight into it and nothing is copied. Then call `received(count:at:)`.
    public mutating func receiveSpace() -> UnsafeMutableRawBufferPointer {
        if count == buffer.count { compact() }
        return UnsafeMutableRawBufferPointer(rebasing: buffer[count...])
    }

    /// `n` bytes were read into `receiveSpace()` at monotonic time `now`.
    public mutating func received(count n: Int, at now: UInt64) -> Action {
        guard isActive else { return .failed(.malformed) }
        precondition(n >= 0 && n <= buffer.count - count, "more bytes than receiveSpace() offered")
        if count > 0 && now > lastByteAt && now - lastByteAt > configuration.interByteTimeoutNanos {
            // The new bytes start a fresh frame: move them to the front.
            buffer.baseAddress!.copyMemory(from: buffer.baseAddress! + count, byteCount: n)
        }
        noteArrival(at: now)
        count += n
        return evaluate(now: now)
    }

    /// The inter-byte gap rule: bytes after a long silence cannot belong to the frame in progress.
    private mutating func noteArrival(at now: UInt64) {
        if count > 0 && now > lastByteAt && now - lastByteAt > configuration.interByteTimeoutNanos {
            // The frame in progress was interrupted: whatever it was, it cannot be completed now.
            count = 0
            brokenFrames += 1
        }
        lastByteAt = now
    }

    /// The deadline passed (or the caller polls): finishes with an error if the reply is not complete.
    public mutating func timerFired(at now: UInt64) -> Action {
        guard isActive else { return .failed(.malformed) }
        let action = evaluate(now: now)
        if case .waitForMore = action, now >= deadline {
            return finish(.failed(classifyAtDeadline()))
        }
        return action
    }

    private mutating func finish(_ action: Action) -> Action {
        isActive = false
        return action
    }

    private mutating func evaluate(now: UInt64) -> Action {
        let frame = UnsafeRawBufferPointer(buffer)
        var start = 0
        while start + 1 < count {
            // Only a byte equal to the unit address can start a reply: skip to the next one a word at a time.
            start = Self.firstIndex(of: unit, in: frame, from: start, to: count - 1)
            guard start + 1 < count else { break }
            defer { start += 1 }
            let fc = frame[start + 1]
            let length: Int
            if fc == function {
                length = expectedLength
            } else if fc == function | FunctionCode.exceptionBit {
                length = 5
            } else {
                continue
            }
            if count - start < length {
                // A plausible reply has started; a shorter one (an exception) behind it may still complete first.
                continue
            }
            let candidate = UnsafeRawBufferPointer(rebasing: frame[start..<(start + length)])
            guard CRC16.isValid(candidate) else {
                crcFailures += 1
                continue
            }
            if fc != function {
                return finish(.failed(.exception(candidate[2])))
            }
            if !contentMatches(candidate) {
                return finish(.failed(.malformed))
            }
            return finish(.complete(frame: start..<(start + length)))
        }
        return now >= deadline ? finish(.failed(classifyAtDeadline())) : .waitForMore(deadline: deadline)
    }

    private func contentMatches(_ frame: UnsafeRawBufferPointer) -> Bool {
        switch FunctionCode(rawValue: function) {
        case .readCoils, .readHoldingRegisters:
            return Int(frame[2]) == expectedByteCount
        case .writeSingleCoil, .writeMultipleRegisters:
            return frame.word(at: 2) == echo.0 && frame.word(at: 4) == echo.1
        case nil:
            return false
        }
    }

    private func classifyAtDeadline() -> Failure {
        if crcFailures > 0 { return .crcMismatch }
        let frame = UnsafeRawBufferPointer(buffer)
        // A well-formed frame for someone else: only looked for on this (rare) error path.
        if count >= 4 {
            for start in 0...(count - 4) {
                let rest = UnsafeRawBufferPointer(rebasing: frame[start..<count])
                guard CRC16.isValid(rest) else { continue }
                if rest[0] != unit { return .wrongSlave(rest[0]) }
                if rest[1] & 0x7F != function { return .wrongFunction(rest[1]) }
            }
        }
        if count == 0 { return brokenFrames > 0 ? .incompleteReply(received: 0) : .noReply }
        for start in 0..<count where frame[start] == unit {
            if start + 1 == count { return .incompleteReply(received: 1) }
            let fc = frame[start + 1]
            if fc == function || fc == function | FunctionCode.exceptionBit {
                return .incompleteReply(received: count - start)
            }
        }
        return .malformed
    }

    /// The first index in `from..<to` whose byte is `value`, or `to`. Eight bytes per step (the usual "has a zero
    /// byte" word trick), so a reply's data is passed over without looking at each byte.
    @inline(__always)
    static func firstIndex(of value: UInt8, in bytes: UnsafeRawBufferPointer, from: Int, to: Int) -> Int {
        var i = from
        let pattern = UInt64(value) &* 0x0101_0101_0101_0101
        while i + 8 <= to {
            let word = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self)) ^ pattern
            if (word &- 0x0101_0101_0101_0101) & ~word & 0x8080_8080_8080_8080 != 0 { break }
            i += 8
        }
        while i < to && bytes[i] != value { i += 1 }
        return i
    }

    /// Keeps the newest half of the buffer when junk has filled it.
    private mutating func compact() {
        let keep = buffer.count / 2
        let base = buffer.baseAddress!
        // copyMemory has memmove semantics: the regions may overlap.
        base.copyMemory(from: base + (count - keep), byteCount: keep)
        count = keep
    }
}

extension MasterTransaction.Failure: CustomStringConvertible {
    public var description: String {
        switch self {
        case .noReply: return "no reply"
        case .incompleteReply(let n): return "incomplete reply (\(n) bytes)"
        case .crcMismatch: return "CRC error"
        case .wrongSlave(let u): return "reply from unit \(u) instead"
        case .wrongFunction(let f): return "reply with function 0x\(String(f, radix: 16))"
        case .exception(let code): return "Modbus exception \(code) (\(ExceptionCode.describe(code)))"
        case .malformed: return "malformed reply"
        }
    }
}
