import Platform
import CPlatform
import Glibc
import ModbusCore

/// Monotonic timestamps of one `RS485Port.send`, for the turnaround benchmark and for diagnosing a bus.
public struct SendTiming: Equatable, Sendable {
    /// How the end of the frame was established before DE was released.
    public enum EndOfFrame: Equatable, Sendable {
        /// `none` / `kernel`: the transceiver or the UART driver turns the bus around; DE was not held.
        case notWaited
        /// Waited for the computed end of the last stop bit, then the driver reported the transmitter empty
        /// (TIOCSERGETLSR / TEMT). The normal case on a Pi UART.
        case transmitterEmpty
        /// TEMT was still not reported 1.5 character times after the computed end; DE was released anyway so it
        /// can't collide with the reply. The last character may have been cut: if this repeats, the UART starts
        /// sending late (interrupt latency) or its driver misreports TEMT.
        case transmitterEmptyLate
        /// The driver can't report TEMT (USB adapter): tcdrain, then at least the computed end.
        case drained
        /// A pty: no wire and no driver to ask; held DE for the computed wire time only.
        case computed
    }

    public var bytes: Int
    /// `beginTransmit()` returned: DE is driving the bus.
    public var directionAssertedNanos: UInt64
    /// Just before the first `write`.
    public var writeStartNanos: UInt64
    /// The last byte is in the kernel.
    public var writeReturnedNanos: UInt64
    /// Computed end of the last stop bit: `writeStartNanos + bytes × characterNanos`. The UART can't have
    /// finished earlier; it may finish later by its start-up latency, which the TEMT poll covers.
    public var lastStopBitNanos: UInt64
    /// When the driver confirmed the end (TEMT seen, or tcdrain returned), if it was asked.
    public var confirmedNanos: UInt64?
    /// `endTransmit()` returned: the transceiver is listening again.
    public var directionReleasedNanos: UInt64
    public var endOfFrame: EndOfFrame

    /// Release time relative to the computed end of the last stop bit (negative: released before it, which only
    /// happens in `notWaited` mode where the hardware holds DE).
    public var releaseAfterLastStopBitNanos: Int64 {
        Int64(bitPattern: directionReleasedNanos &- lastStopBitNanos)
    }
}

/// An RS485 half-duplex port: the serial port, the DE/RE control and the line's frame timing together. This is
/// what the Modbus RTU master sends and receives through.
///
/// Preallocated: `send`, `receive`, `flushInput` and `waitForSilence` don't allocate. One thread at a time.
public final class RS485Port {
    public let port: SerialPort
    public let direction: DirectionControl
    public let timing: FrameTiming
    /// Monotonic time of the last known activity on the line: the computed end of our last frame, or when
    /// received bytes were last returned. `waitForSilence` measures quiet time from here.
    /// (Issue 18: `@exclusivity(unchecked)`: one thread at a time uses a port, and the dynamic check cost more than
    /// the rest of a read on the transaction path.)
    @exclusivity(unchecked) public private(set) var lastLineActivityNanos: UInt64
    /// Bytes thrown away by `waitForSilence` (noise, late replies, other talkers), for diagnostics.
    @exclusivity(unchecked) public private(set) var discardedBytes: Int = 0

    /// How the end of each frame is established before DE is released; decided once, when the port is made.
    public enum Turnaround: Equatable, Sendable {
        /// `none` / `kernel` direction: the hardware turns the bus around; don't wait.
        case hardware
        /// A pty: wait for the computed wire time only.
        case computedWireTime
        /// A UART that reports TEMT: computed wire time, then poll TIOCSERGETLSR.
        case transmitterEmpty
        /// No TEMT, not a pty (USB adapter with DE driven by us): tcdrain, then at least the computed wire time.
        case drain
    }

    public let turnaround: Turnaround

    private let scratch: UnsafeMutableRawBufferPointer
    /// How often to ask the driver for TEMT while waiting: an eighth of a character, at least 20 µs.
    private let temtPollNanos: UInt64
    /// Asks the driver whether the transmitter is empty; replaceable so tests can play a UART.
    private let transmitterEmpty: () -> Bool?

    public convenience init(port: SerialPort, direction: DirectionControl, timing: FrameTiming? = nil) {
        let turnaround: Turnaround
        if !direction.needsEndOfFrameWait {
            turnaround = .hardware
        } else if port.isPseudoTerminal {
            turnaround = .computedWireTime
        } else if port.transmitterEmpty() != nil {
            turnaround = .transmitterEmpty
        } else {
            turnaround = .drain
        }
        self.init(
            port: port, direction: direction, timing: timing, turnaround: turnaround,
            transmitterEmpty: { [unowned port] in port.transmitterEmpty() })
    }

    /// For tests: force a turnaround strategy and stand in for the driver's TEMT answer.
    init(
        port: SerialPort, direction: DirectionControl, timing: FrameTiming?, turnaround: Turnaround,
        transmitterEmpty: @escaping () -> Bool?
    ) {
        self.port = port
        self.direction = direction
        self.timing = timing ?? FrameTiming(port.line)
        self.turnaround = turnaround
        self.transmitterEmpty = transmitterEmpty
        self.scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 256, alignment: 1)
        self.temtPollNanos = max(20_000, self.timing.characterNanos / 8)
        self.lastLineActivityNanos = MonotonicClock.nowNanos()
    }

    /// Opens `path` for `line` and sets up `direction` on it; the transceiver starts in receive.
    public convenience init(
        path: String, line: LineSettings, direction: DirectionMode, consumer: String = "meterext"
    ) throws(SystemError) {
        let port = try SerialPort(path: path, line: line)
        let control = try direction.makeControl(for: port, consumer: consumer)
        self.init(port: port, direction: control)
    }

    deinit {
        try? direction.endTransmit()
        scratch.deallocate()
    }

    /// Releases DE and closes the serial port.
    public func close() {
        try? direction.endTransmit()
        port.close()
    }

    /// Sends one frame: asserts DE, writes, holds DE until the last stop bit has left the UART, releases DE.
    ///
    /// The end of the frame is `write start + bytes × character time` on the monotonic clock (the UART can't be
    /// faster), then confirmed by the driver where it can tell:
    /// - UART with TEMT (every serial_core driver: PL011, 8250, the Pi's mini UART): sleep to the computed end,
    ///   then ask TIOCSERGETLSR every ⅛ character until the shift register is empty. This is exact to a poll
    ///   interval, where tcdrain is not: depending on the driver it returns when the software buffer is empty while
    ///   the FIFO still shifts (DE dropped mid-frame), or it sleeps in scheduler ticks and returns milliseconds
    ///   late (DE still held when the meter answers). If TEMT isn't reported within t1.5 after the computed end,
    ///   DE is released anyway — well before t3.5, when the reply may start.
    /// - No TEMT and not a pty (USB adapter with DE driven by us): tcdrain is the only hint the bytes left the
    ///   host at all, then at least the computed end.
    /// - pty: the computed end only (keeps simulated timing realistic).
    /// - `none` / `kernel` direction: no wait; the hardware turns the bus around.
    /// No fixed, guessed sleeps anywhere. If anything fails after DE was asserted, DE is released before throwing.
    @discardableResult
    public func send(_ frame: UnsafeRawBufferPointer) throws(SystemError) -> SendTiming {
        try direction.beginTransmit()
        // DE asserted and write start are back to back: one clock reading serves both (issue 18: fewer calls on
        // the transaction path).
        let asserted = MonotonicClock.nowNanos()
        let writeStart = asserted
        var writeReturned: UInt64 = 0
        let lastStopBit = writeStart &+ timing.wireNanos(bytes: frame.count)
        var confirmed: UInt64? = nil
        var endOfFrame = SendTiming.EndOfFrame.notWaited
        do {
            try port.write(frame)
            writeReturned = MonotonicClock.nowNanos()
            switch turnaround {
            case .hardware:
                break
            case .computedWireTime:
                MonotonicClock.sleep(untilNanos: lastStopBit)
                endOfFrame = .computed
            case .transmitterEmpty:
                // The UART can't be done before the computed end: sleep through it rather than poll it.
                MonotonicClock.sleep(untilNanos: lastStopBit)
                (confirmed, endOfFrame) = waitForTransmitterEmpty(deadline: lastStopBit &+ timing.t15Nanos)
            case .drain:
                try port.drain()
                confirmed = MonotonicClock.nowNanos()
                MonotonicClock.sleep(untilNanos: lastStopBit)
                endOfFrame = .drained
            }
        } catch {
            try? direction.endTransmit()
            throw error
        }
        try direction.endTransmit()
        // With the hardware turning the bus around nothing waited since the write returned: no second reading.
        let released = turnaround == .hardware ? writeReturned : MonotonicClock.nowNanos()
        lastLineActivityNanos = max(lastStopBit, released)
        return SendTiming(
            bytes: frame.count, directionAssertedNanos: asserted, writeStartNanos: writeStart,
            writeReturnedNanos: writeReturned, lastStopBitNanos: lastStopBit, confirmedNanos: confirmed,
            directionReleasedNanos: released, endOfFrame: endOfFrame)
    }

    private func waitForTransmitterEmpty(deadline: UInt64) -> (UInt64?, SendTiming.EndOfFrame) {
        while true {
            if transmitterEmpty() != false {  // true, or the driver stopped answering: nothing to wait for
                return (MonotonicClock.nowNanos(), .transmitterEmpty)
            }
            let now = MonotonicClock.nowNanos()
            if now >= deadline { return (nil, .transmitterEmptyLate) }
            MonotonicClock.sleep(untilNanos: min(deadline, now &+ temtPollNanos))
        }
    }

    /// Reads what has arrived, waiting at most `timeoutNanos` for the first byte; 0 on timeout.
    public func receive(into buffer: UnsafeMutableRawBufferPointer, timeoutNanos: UInt64) throws(SystemError) -> Int {
        let n = try port.read(into: buffer, timeoutNanos: timeoutNanos)
        if n > 0 { lastLineActivityNanos = MonotonicClock.nowNanos() }
        return n
    }

    /// Waits for a reply's bytes until the monotonic `deadline` and reads what has arrived; 0 at the deadline.
    ///
    /// The transaction path (issue 18): the request has just gone out, so nothing can be there yet — wait first
    /// (one ppoll), then read (one read), as libmodbus does with select/read. `now` is the caller's last clock
    /// reading; the arrival is stamped once, in `lastLineActivityNanos`, which the caller feeds to its machine.
    public func receiveReply(into buffer: UnsafeMutableRawBufferPointer, deadline: UInt64, now: UInt64)
        throws(SystemError) -> Int
    {
        let fd = port.fileDescriptor
        var now = now
        while now < deadline {
            let ready = meterext_poll_one(fd, Int16(POLLIN), Int64(deadline - now))
            if ready < 0 {
                let error = Glibc.errno
                if error != EINTR { throw SystemError(operation: "poll", errno: error, path: port.path) }
            } else if ready == 0 {
                return 0
            } else if Int16(truncatingIfNeeded: ready) & Int16(POLLNVAL) != 0 {
                throw SystemError(operation: "read", errno: EBADF, path: port.path)
            } else {
                if let n = try systemRead(fd, buffer, path: port.path), n > 0 {
                    lastLineActivityNanos = MonotonicClock.nowNanos()
                    return n
                }
                if Int16(truncatingIfNeeded: ready) & Int16(POLLHUP) != 0 {
                    throw SystemError(operation: "read", errno: EIO, path: port.path, detail: "the line hung up")
                }
            }
            now = MonotonicClock.nowNanos()
        }
        return 0
    }

    /// Discards everything received and not yet read.
    public func flushInput() throws(SystemError) {
        try port.flushInput()
    }

    /// Reads and discards until the line has been quiet for `nanos` (t3.5 before a request), counting from the
    /// last known activity, so an already quiet line costs one non-blocking read. Gives up after `limitNanos`
    /// (a babbling device or a second master) and returns false.
    @discardableResult
    public func waitForSilence(nanos: UInt64, limitNanos: UInt64 = 1_000_000_000) throws(SystemError) -> Bool {
        var now = MonotonicClock.nowNanos()
        let limit = now &+ limitNanos
        while true {
            let quietUntil = lastLineActivityNanos &+ nanos
            if now >= quietUntil {
                // Quiet long enough: one read that finds nothing (the usual case) ends the wait.
                guard let n = try systemRead(port.fileDescriptor, scratch, path: port.path), n > 0 else { return true }
                discardedBytes &+= n
                lastLineActivityNanos = MonotonicClock.nowNanos()
            } else if now >= limit {
                return false
            } else {
                // Nothing may arrive until quietUntil: one ppoll that times out is the whole wait.
                let wait = min(quietUntil, limit) - now
                let ready = meterext_poll_one(port.fileDescriptor, Int16(POLLIN), Int64(wait))
                if ready < 0 {
                    let error = Glibc.errno
                    if error != EINTR { throw SystemError(operation: "poll", errno: error, path: port.path) }
                } else if ready == 0 {
                    if quietUntil <= limit { return true }
                } else if Int16(truncatingIfNeeded: ready) & Int16(POLLNVAL) != 0 {
                    throw SystemError(operation: "read", errno: EBADF, path: port.path)
                } else if let n = try systemRead(port.fileDescriptor, scratch, path: port.path), n > 0 {
                    discardedBytes &+= n
                    lastLineActivityNanos = MonotonicClock.nowNanos()
                } else if Int16(truncatingIfNeeded: ready) & Int16(POLLHUP) != 0 {
                    throw SystemError(operation: "read", errno: EIO, path: port.path, detail: "the line hung up")
                }
            }
            now = MonotonicClock.nowNanos()
        }
    }

}
