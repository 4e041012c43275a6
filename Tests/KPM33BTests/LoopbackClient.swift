import ModbusCore
@testable import KPM33B

/// A master wired straight to a `SimulatedMeter` in memory (Zephyr's "raw" transport idea): the request is
/// encoded, parsed by the slave codec, answered by the simulator, and the reply bytes go through the real
/// `MasterTransaction`. Faults can be injected per request.
final class LoopbackClient: ModbusClient {
    enum Fault { case silence, corruptCRC, garbagePrefix, exception(ExceptionCode), otherUnit }

    let meter: SimulatedMeter
    var faults: [Fault] = []
    /// When set, every request is answered with this fault (a meter that disappeared).
    var persistentFault: Fault?
    var time: Double = 0
    private(set) var statistics = ModbusStatistics()
    private(set) var requests: [ModbusRequest] = []
    let retry = RetryPolicy(attempts: 3)
    private let tx = UnsafeMutableRawBufferPointer.allocate(byteCount: ModbusLimits.maxADU, alignment: 1)
    private let rx = UnsafeMutableRawBufferPointer.allocate(byteCount: ModbusLimits.maxADU * 2, alignment: 1)
    private let slaveReply = UnsafeMutableRawBufferPointer.allocate(byteCount: ModbusLimits.maxADU, alignment: 1)

    init(meter: SimulatedMeter) { self.meter = meter }

    deinit { tx.deallocate(); rx.deallocate(); slaveReply.deallocate() }

    func execute(_ request: ModbusRequest) -> ModbusResult {
        requests.append(request)
        statistics.transactions += 1
        var attempt = 1
        while true {
            let result = attemptOnce(request)
            switch result {
            case .success:
                statistics.succeeded += 1
                return result
            case .failure(let f):
                statistics.count(f)
                guard retry.shouldRetry(after: f, attempt: attempt) else { return result }
                attempt += 1
                statistics.retries += 1
            }
        }
    }

    private func attemptOnce(_ request: ModbusRequest) -> ModbusResult {
        let n = request.encode(into: tx)
        guard case .request(let parsed, _) = SlaveCodec.parse(UnsafeRawBufferPointer(rebasing: tx[0..<n])) else {
            return .failure(.invalidRequest)
        }
        time += 0.05
        var replyLength = meter.handle(parsed, now: time, into: slaveReply)
        var bytes = Array(UnsafeRawBufferPointer(rebasing: slaveReply[0..<replyLength]))
        let fault = faults.isEmpty ? persistentFault : faults.removeFirst()
        switch fault {
        case .silence?: bytes = []
        case .corruptCRC?: bytes[bytes.count - 1] ^= 0xFF
        case .garbagePrefix?: bytes = [0x00, 0xFF, 0x55] + bytes
        case .exception(let code)?:
            replyLength = SlaveCodec.encodeException(unit: request.unit, function: request.function.rawValue,
                                                     code: code, into: slaveReply)
            bytes = Array(UnsafeRawBufferPointer(rebasing: slaveReply[0..<replyLength]))
        case .otherUnit?:
            bytes[0] = request.unit &+ 1
            let crc = CRC16.compute(bytes.dropLast(2))
            bytes[bytes.count - 2] = UInt8(crc & 0xFF)
            bytes[bytes.count - 1] = UInt8(crc >> 8)
        case nil: break
        }
        var machine = MasterTransaction(buffer: rx)
        var action = machine.begin(request, timing: LineSettings.meterDefault.timing,
                                   configuration: .init(), sentAt: 0)
        if !bytes.isEmpty {
            action = bytes.withUnsafeBytes { machine.received($0, at: 10_000_000) }
        }
        if case .waitForMore(let deadline) = action { action = machine.timerFired(at: deadline) }
        switch action {
        case .complete(let range): return .success(UnsafeRawBufferPointer(rebasing: rx[range]))
        case .failed(let f): return .failure(.transaction(f))
        case .waitForMore: return .failure(.transaction(.noReply))
        }
    }
}

/// A clock the test moves by hand.
final class ManualClock: @unchecked Sendable {
    var nanos: UInt64 = 1_000_000_000
    var unix: Int64 = 1_790_000_000
    func advance(seconds: Double) {
        nanos += UInt64(seconds * 1e9)
        unix += Int64(seconds)
    }
    var pollClock: PollClock {
        PollClock(monotonicNanos: { self.nanos }, unixSeconds: { self.unix })
    }
}
