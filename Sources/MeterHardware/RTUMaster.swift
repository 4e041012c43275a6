import Platform
import ModbusCore

/// Modbus RTU master over an RS485 port: the I/O half of `MasterTransaction`.
///
/// Per request: t3.5 of silence (stale bytes are discarded), the request is sent with the direction line handled
/// by `RS485Port`, then bytes are fed to the state machine as they arrive until it completes or its deadline
/// passes. Transmission errors are retried (`RetryPolicy`); Modbus exceptions are answers and are not.
/// All buffers are allocated once here: a transaction allocates nothing.
public final class RTUMaster: ModbusClient {
    public let port: RS485Port
    public let timing: FrameTiming
    @exclusivity(unchecked) public var configuration: MasterTransaction.Configuration
    @exclusivity(unchecked) public var retry: RetryPolicy
    @exclusivity(unchecked) public private(set) var statistics = ModbusStatistics()
    /// Timing of the last request sent (for the DE benchmark).
    @exclusivity(unchecked) public private(set) var lastSend: SendTiming?

    private let tx = UnsafeMutableRawBufferPointer.allocate(byteCount: ModbusLimits.maxADU, alignment: 8)
    private let rx = UnsafeMutableRawBufferPointer.allocate(byteCount: 2 * ModbusLimits.maxADU, alignment: 8)
    /// (Issue 18: the exclusivity attributes: one thread at a time runs a master; the dynamic checks were a fifth
    /// of the instructions of a transaction.)
    @exclusivity(unchecked) private var machine: MasterTransaction
    /// After a failed attempt the line must stay quiet this long before the next request (at least t3.5). The scan
    /// lowers it: it probes silent addresses back to back and catches a late reply itself (issue 14).
    public var quietAfterFailureNanos: UInt64 = 100_000_000

    public init(port: RS485Port, timing: FrameTiming,
                configuration: MasterTransaction.Configuration = .init(), retry: RetryPolicy = .init()) {
        self.port = port
        self.timing = timing
        self.configuration = configuration
        self.retry = retry
        self.machine = MasterTransaction(buffer: rx)
    }

    deinit {
        tx.deallocate()
        rx.deallocate()
    }

    public func execute(_ request: ModbusRequest) -> ModbusResult {
        statistics.transactions += 1
        if request.validationError != nil {
            statistics.count(.invalidRequest)
            return .failure(.invalidRequest)
        }
        let length = request.encode(into: tx)
        var attempt = 1
        while true {
            let result = attemptOnce(request, length: length)
            switch result {
            case .success:
                statistics.succeeded += 1
                return result
            case .failure(let failure):
                statistics.count(failure)
                statistics.interruptedFrames += UInt64(machine.interruptedFrames)
                // A reply that is merely late must land in this quiet period, not in the next transaction.
                if case .transaction = failure {
                    _ = try? port.waitForSilence(nanos: max(timing.t35Nanos, quietAfterFailureNanos))
                }
                guard retry.shouldRetry(after: failure, attempt: attempt) else { return result }
                attempt += 1
                statistics.retries += 1
            }
        }
    }

    private func attemptOnce(_ request: ModbusRequest, length: Int) -> ModbusResult {
        do {
            // Bytes still on the line (a late reply to an earlier request, noise) must not be read as this reply.
            _ = try port.waitForSilence(nanos: timing.t35Nanos)
            lastSend = try port.send(UnsafeRawBufferPointer(rebasing: tx[0..<length]))
        } catch {
            return .failure(.io(errno: error.errno, operation: "send"))
        }
        // The machine lives in a local for the transaction: no exclusivity bookkeeping per chunk on a class property.
        var machine = self.machine
        defer { self.machine = machine }
        var now = lastSend!.directionReleasedNanos
        var action = machine.begin(request, timing: timing, configuration: configuration, sentAt: now)
        while true {
            switch action {
            case .complete(let frame):
                return .success(UnsafeRawBufferPointer(rebasing: rx[frame]))
            case .failed(let failure):
                return .failure(.transaction(failure))
            case .waitForMore(let deadline):
                if now >= deadline {
                    action = machine.timerFired(at: now)
                    continue
                }
                // Whole read() chunks go straight into the machine's buffer: nothing is copied byte by byte.
                let n: Int
                do {
                    n = try port.receiveReply(into: machine.receiveSpace(), deadline: deadline, now: now)
                } catch {
                    return .failure(.io(errno: error.errno, operation: "receive"))
                }
                if n > 0 {
                    // The port stamped the arrival once; it is also "now" for the next round.
                    now = port.lastLineActivityNanos
                    action = machine.received(count: n, at: now)
                } else {
                    now = MonotonicClock.nowNanos()
                    action = machine.timerFired(at: now)
                }
            }
        }
    }
}
