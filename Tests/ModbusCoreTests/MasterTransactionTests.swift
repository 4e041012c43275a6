import XCTest
@testable import ModbusCore

/// Drives the master state machine with synthetic time: no sleeps, no I/O.
final class MasterTransactionTests: XCTestCase {
    let timing = LineSettings.meterDefault.timing
    let config = MasterTransaction.Configuration(responseTimeoutNanos: 600_000_000, interByteTimeoutNanos: 50_000_000)
    let ms: UInt64 = 1_000_000
    var storage = [UInt8](repeating: 0, count: 2 * ModbusLimits.maxADU)

    /// A valid FC03 reply for `count` registers with values 0, 1, 2, …
    func registersReply(unit: UInt8 = 1, count: Int) -> [UInt8] {
        var buf = [UInt8](repeating: 0, count: ModbusLimits.maxADU)
        let n = buf.withUnsafeMutableBytes {
            SlaveCodec.encodeRegisters(unit: unit, count: count, into: $0) { UInt16($0) }
        }
        return Array(buf[0..<n])
    }

    func run(_ request: ModbusRequest, chunks: [(UInt64, [UInt8])], finalTime: UInt64? = nil)
        -> (MasterTransaction.Action, [UInt8]) {
        storage.withUnsafeMutableBytes { buf in
            var machine = MasterTransaction(buffer: buf)
            var action = machine.begin(request, timing: timing, configuration: config, sentAt: 0)
            for (time, bytes) in chunks {
                action = bytes.withUnsafeBytes { machine.received($0, at: time) }
                if case .waitForMore = action { continue }
                break
            }
            if case .waitForMore(let deadline) = action {
                action = machine.timerFired(at: finalTime ?? deadline)
            }
            if case .complete(let range) = action {
                return (action, Array(buf[range]))
            }
            return (action, [])
        }
    }

    let read4 = ModbusRequest.readHoldingRegisters(unit: 1, start: 0x30, count: 4)

    func testCompleteReplyInOneChunk() {
        let reply = registersReply(count: 4)
        let (action, frame) = run(read4, chunks: [(10 * ms, reply)])
        XCTAssertEqual(action, .complete(frame: 0..<13))
        XCTAssertEqual(frame, reply)
    }

    func testReplySplitAcrossReads() {
        let reply = registersReply(count: 4)
        let (action, frame) = run(read4, chunks: [(10 * ms, Array(reply[0..<1])), (12 * ms, Array(reply[1..<7])),
                                                  (14 * ms, Array(reply[7...]))])
        XCTAssertEqual(action, .complete(frame: 0..<13))
        XCTAssertEqual(frame, reply)
    }

    func testLeadingJunkIsSkipped() {
        let reply = registersReply(count: 4)
        // Junk includes a false frame start (01 03) whose CRC cannot hold.
        let junk = hex("FF 00 01 03 08 55")
        let (action, frame) = run(read4, chunks: [(10 * ms, junk + reply)])
        XCTAssertEqual(action, .complete(frame: junk.count..<(junk.count + 13)))
        XCTAssertEqual(frame, reply)
    }

    func testTrailingGarbageDoesNotSpoilTheFrame() {
        let reply = registersReply(count: 4)
        let (action, frame) = run(read4, chunks: [(10 * ms, reply + hex("00 FF 13"))])
        XCTAssertEqual(frame, reply)
        XCTAssertEqual(action, .complete(frame: 0..<13))
    }

    func testCRCErrorIsReportedAtTheDeadline() {
        var reply = registersReply(count: 4)
        reply[5] ^= 0x40
        let (action, _) = run(read4, chunks: [(10 * ms, reply)])
        XCTAssertEqual(action, .failed(.crcMismatch))
    }

    func testNoReplyTimesOut() {
        let (action, _) = run(read4, chunks: [])
        XCTAssertEqual(action, .failed(.noReply))
    }

    func testDeadlineCoversTimeoutPlusWireTime() {
        storage.withUnsafeMutableBytes { buf in
            var machine = MasterTransaction(buffer: buf)
            let start = machine.begin(read4, timing: timing, configuration: config, sentAt: 1_000 * ms)
            let expected = 1_000 * ms + 600 * ms + timing.wireNanos(bytes: 13) + 50 * ms
            XCTAssertEqual(start, .waitForMore(deadline: expected))
            // Before the deadline the timer changes nothing.
            XCTAssertEqual(machine.timerFired(at: expected - 1), .waitForMore(deadline: expected))
            XCTAssertEqual(machine.timerFired(at: expected), .failed(.noReply))
        }
    }

    func testBytesAlreadyBufferedAreJudgedBeforeTheClock() {
        // A transport may read a complete reply after the deadline because it sat in the kernel buffer while the
        // thread was descheduled: data is evaluated before time, so it still completes.
        let reply = registersReply(count: 4)
        let (late, _) = run(read4, chunks: [(2_000 * ms, reply)])
        XCTAssertEqual(late, .complete(frame: 0..<13))
        let (timedOut, _) = run(read4, chunks: [], finalTime: 2_000 * ms)
        XCTAssertEqual(timedOut, .failed(.noReply))
    }

    func testIncompleteReply() {
        let reply = registersReply(count: 4)
        let (action, _) = run(read4, chunks: [(10 * ms, Array(reply[0..<6]))])
        XCTAssertEqual(action, .failed(.incompleteReply(received: 6)))
    }

    func testExceptionReply() {
        let (action, _) = run(read4, chunks: [(10 * ms, hex("01 83 02 C0 F1"))])
        XCTAssertEqual(action, .failed(.exception(2)))
    }

    func testExceptionBehindAFalseStartCompletes() {
        // "01 03" in junk claims a 13-byte reply; the real exception frame after it is shorter.
        let (action, _) = run(read4, chunks: [(10 * ms, hex("01 03") + hex("01 83 02 C0 F1"))])
        XCTAssertEqual(action, .failed(.exception(2)))
    }

    func testWrongSlaveIsRecognised() {
        let reply = registersReply(unit: 7, count: 4)
        let (action, _) = run(read4, chunks: [(10 * ms, reply)])
        XCTAssertEqual(action, .failed(.wrongSlave(7)))
    }

    func testWrongFunctionIsRecognised() {
        var buf = [UInt8](repeating: 0, count: ModbusLimits.maxADU)
        let n = buf.withUnsafeMutableBytes { SlaveCodec.encodeCoils(unit: 1, count: 3, into: $0) { _ in true } }
        let (action, _) = run(read4, chunks: [(10 * ms, Array(buf[0..<n]))])
        XCTAssertEqual(action, .failed(.wrongFunction(0x01)))
    }

    func testGarbageOnlyIsMalformed() {
        let (action, _) = run(read4, chunks: [(10 * ms, hex("55 AA 55 AA 00 11 22"))])
        XCTAssertEqual(action, .failed(.malformed))
    }

    func testInterByteGapBreaksTheFrame() {
        let reply = registersReply(count: 4)
        // First half, then silence longer than the gap limit, then the rest: the pieces must not be glued.
        let (action, _) = run(read4, chunks: [(10 * ms, Array(reply[0..<6])), (200 * ms, Array(reply[6...]))])
        XCTAssertNotEqual(action, .complete(frame: 0..<13))
        if case .failed = action {} else { XCTFail("expected a failure, got \(action)") }
    }

    func testGapThenFreshFrameSucceeds() {
        let reply = registersReply(count: 4)
        let (action, frame) = run(read4, chunks: [(10 * ms, Array(reply[0..<6])), (200 * ms, reply)])
        XCTAssertEqual(frame, reply)
        if case .complete = action {} else { XCTFail("expected completion, got \(action)") }
    }

    func testWriteEchoMustMatch() {
        let on = ModbusRequest.writeSingleCoil(unit: 1, address: 1, on: true)
        let good = run(on, chunks: [(5 * ms, hex("01 05 00 01 FF 00 DD FA"))])
        XCTAssertEqual(good.0, .complete(frame: 0..<8))
        // The echo of an "off" command does not confirm an "on" command.
        let wrong = run(on, chunks: [(5 * ms, hex("01 05 00 01 00 00 9C 0A"))])
        XCTAssertEqual(wrong.0, .failed(.malformed))
    }

    func testByteCountMustMatchTheRequest() {
        // A valid 3-register reply to a 4-register request has the right shape but the wrong byte count.
        let reply = registersReply(count: 3)
        let (action, _) = run(read4, chunks: [(10 * ms, reply)])
        if case .complete = action { XCTFail("a short reply must not complete") }
    }

    func testJunkFloodKeepsTheNewestBytes() {
        let reply = registersReply(count: 4)
        let junk = [UInt8](repeating: 0x55, count: 3 * ModbusLimits.maxADU)
        let (action, frame) = run(read4, chunks: [(10 * ms, junk), (11 * ms, reply)])
        XCTAssertEqual(frame, reply)
        if case .complete = action {} else { XCTFail("expected completion, got \(action)") }
    }
}
