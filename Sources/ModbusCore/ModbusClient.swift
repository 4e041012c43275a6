/// A Modbus master as the meter driver sees it: one request in, one reply frame or one failure out.
///
/// Implementations own their buffers and retry policy. The reply frame (address … CRC) stays readable until the
/// next call, so the caller decodes it in place without copying or allocating.
public protocol ModbusClient: AnyObject {
    func execute(_ request: ModbusRequest) -> ModbusResult
    /// Counters for every attempt, never reset while the client lives.
    var statistics: ModbusStatistics { get }
}

public enum ModbusResult {
    case success(UnsafeRawBufferPointer)
    case failure(ModbusFailure)
}

public enum ModbusFailure: Error, Equatable, Sendable, CustomStringConvertible {
    case transaction(MasterTransaction.Failure)
    /// The serial device failed (unplugged USB adapter, I/O error): errno and the operation.
    case io(errno: Int32, operation: StaticString)
    /// The request itself is invalid; nothing was sent.
    case invalidRequest

    public static func == (a: ModbusFailure, b: ModbusFailure) -> Bool {
        switch (a, b) {
        case (.transaction(let x), .transaction(let y)): return x == y
        case (.io(let e1, let o1), .io(let e2, let o2)): return e1 == e2 && o1.description == o2.description
        case (.invalidRequest, .invalidRequest): return true
        default: return false
        }
    }

    public var description: String {
        switch self {
        case .transaction(let f): return f.description
        case .io(let errno, let op): return "\(op) failed (errno \(errno))"
        case .invalidRequest: return "invalid request"
        }
    }
}

/// Error counters by class. Plain values so a snapshot can copy them without allocating.
public struct ModbusStatistics: Sendable, Equatable {
    /// Requests executed (each counts once, whatever its retries).
    public var transactions: UInt64 = 0
    public var succeeded: UInt64 = 0
    /// Attempts that failed, by class.
    public var timeouts: UInt64 = 0
    public var crcErrors: UInt64 = 0
    public var exceptions: UInt64 = 0
    public var wrongSlave: UInt64 = 0
    public var wrongFunction: UInt64 = 0
    public var malformed: UInt64 = 0
    public var ioErrors: UInt64 = 0
    /// Attempts beyond the first.
    public var retries: UInt64 = 0
    /// Frames broken by an inter-byte gap.
    public var interruptedFrames: UInt64 = 0

    public init() {}

    public mutating func count(_ failure: ModbusFailure) {
        switch failure {
        case .transaction(.noReply), .transaction(.incompleteReply): timeouts += 1
        case .transaction(.crcMismatch): crcErrors += 1
        case .transaction(.exception): exceptions += 1
        case .transaction(.wrongSlave): wrongSlave += 1
        case .transaction(.wrongFunction): wrongFunction += 1
        case .transaction(.malformed), .invalidRequest: malformed += 1
        case .io: ioErrors += 1
        }
    }

    public var failedAttempts: UInt64 {
        timeouts + crcErrors + exceptions + wrongSlave + wrongFunction + malformed + ioErrors
    }
}

/// How a master retries. Exceptions are answers, not transmission errors: only "acknowledge" (05) and
/// "server device busy" (06), which the spec defines as transient, are retried.
public struct RetryPolicy: Sendable {
    public var attempts: Int

    public init(attempts: Int = 3) { self.attempts = max(1, attempts) }

    public func shouldRetry(after failure: ModbusFailure, attempt: Int) -> Bool {
        guard attempt < attempts else { return false }
        switch failure {
        case .transaction(.exception(let code)):
            return code == ExceptionCode.acknowledge.rawValue || code == ExceptionCode.serverDeviceBusy.rawValue
        case .invalidRequest: return false
        default: return true
        }
    }
}
