import XCTest
@testable import ModbusCore

/// Issue 18: the master machine takes whole read() chunks (copied in bulk, or read straight into its buffer). The
/// outcome must not depend on how the bytes were split: every split of recorded replies gives the same action and
/// the same frame as feeding them one byte at a time.
final class ChunkedFeedTests: XCTestCase {
    let timing = LineSettings.meterDefault.timing
    let config = MasterTransaction.Configuration(responseTimeoutNanos: 600_000_000, interByteTimeoutNanos: 50_000_000)
    let ms: UInt64 = 1_000_000
    var storage = [UInt8](repeating: 0, count: 2 * ModbusLimits.maxADU)

    static func registersReply(unit: UInt8 = 1, count: Int, value: (Int) -> UInt16 = { UInt16($0) }) -> [UInt8] {
        var buf = [UInt8](repeating: 0, count: ModbusLimits.maxADU)
        let n = buf.withUnsafeMutableBytes { SlaveCodec.encodeRegisters(unit: unit, count: count, into: $0, register: value) }
        return Array(buf[0..<n])
    }

    static func withCRC(_ bytes: [UInt8]) -> [UInt8] {
        let crc = CRC16.compute(bytes)
        return bytes + [UInt8(crc & 0xFF), UInt8(crc >> 8)]
    }

    /// Recorded replies to the basic-block read (52 registers at 0x30), as a meter and a noisy bus deliver them.
    let basic = ModbusRequest.readHoldingRegisters(unit: 1, start: 0x30, count: 52)
    lazy var recordings: [(String, [UInt8])] = {
        // Float data with bytes equal to the unit address and to FC03 inside (false frame starts).
        let reply = Self.registersReply(count: 52) { i in i % 5 == 0 ? 0x0103 : UInt16(truncatingIfNeeded: 0x4366 &+ i) }
        let exception = Self.withCRC([0x01, 0x83, 0x02])
        return [
            ("clean reply", reply),
            ("leading junk with a false start", [0xFF, 0x00, 0x01, 0x03, 0x68, 0x55] + reply),
            ("trailing garbage", reply + [0x00, 0xFF, 0x13]),
            ("exception behind a false start", [0x01, 0x03, 0x68] + exception),
            ("corrupted then repeated", Array(reply.prefix(40)) + [0x00] + Array(reply.dropFirst(41)) + reply),
            ("other unit", Self.registersReply(unit: 2, count: 52)),
        ]
    }()

    enum Feed { case bulk, zeroCopy }

    /// Feeds `pieces` at 1 ms intervals, then fires the timer at the deadline if still waiting.
    func run(_ pieces: [ArraySlice<UInt8>], feed: Feed) -> (MasterTransaction.Action, [UInt8]) {
        storage.withUnsafeMutableBytes { buf in
            var machine = MasterTransaction(buffer: buf)
            var action = machine.begin(basic, timing: timing, configuration: config, sentAt: 0)
            var t: UInt64 = 10 * ms
            for piece in pieces {
                guard case .waitForMore = action else { break }
                switch feed {
                case .bulk:
                    action = Array(piece).withUnsafeBytes { machine.received($0, at: t) }
                case .zeroCopy:
                    var rest = piece
                    while !rest.isEmpty, case .waitForMore = action {
                        let space = machine.receiveSpace()
                        let n = min(space.count, rest.count)
                        space.copyBytes(from: rest.prefix(n))
                        rest = rest.dropFirst(n)
                        action = machine.received(count: n, at: t)
                    }
                }
                t += ms
            }
            if case .waitForMore(let deadline) = action { action = machine.timerFired(at: deadline) }
            if case .complete(let range) = action { return (action, Array(buf[range])) }
            return (action, [])
        }
    }

    func bytewise(_ bytes: [UInt8]) -> [ArraySlice<UInt8>] { bytes.indices.map { bytes[$0...$0] } }

    func testEverySplitInTwoAndThreeEqualsTheByteFeed() {
        for (name, bytes) in recordings {
            let expected = run(bytewise(bytes), feed: .bulk)
            if name == "other unit" {
                XCTAssertEqual(expected.0, .failed(.wrongSlave(2)))
            } else if name.hasPrefix("exception") {
                XCTAssertEqual(expected.0, .failed(.exception(2)))
            } else {
                guard case .complete = expected.0 else { return XCTFail("\(name): \(expected.0)") }
            }
            XCTAssertEqual(run([bytes[...]], feed: .bulk).0, expected.0, name)
            XCTAssertEqual(run([bytes[...]], feed: .zeroCopy).1, expected.1, name)
            for i in 0...bytes.count {
                for feed in [Feed.bulk, .zeroCopy] {
                    let two = run([bytes[..<i], bytes[i...]], feed: feed)
                    XCTAssertEqual(two.0, expected.0, "\(name) split at \(i) (\(feed))")
                    XCTAssertEqual(two.1, expected.1, "\(name) split at \(i) (\(feed))")
                }
                for j in stride(from: i, through: bytes.count, by: 7) {
                    let three = run([bytes[..<i], bytes[i..<j], bytes[j...]], feed: .zeroCopy)
                    XCTAssertEqual(three.0, expected.0, "\(name) split at \(i), \(j)")
                    XCTAssertEqual(three.1, expected.1, "\(name) split at \(i), \(j)")
                }
            }
        }
    }

    func testZeroCopyGapStartsAFreshFrame() {
        let reply = Self.registersReply(count: 52)
        storage.withUnsafeMutableBytes { buf in
            var machine = MasterTransaction(buffer: buf)
            _ = machine.begin(basic, timing: timing, configuration: config, sentAt: 0)
            var space = machine.receiveSpace()
            space.copyBytes(from: reply.prefix(30))
            XCTAssertEqual(machine.received(count: 30, at: 10 * ms), .waitForMore(deadline: machine.deadlineForTests))
            // 100 ms of silence, then the whole reply again: the broken 30 bytes are dropped.
            space = machine.receiveSpace()
            space.copyBytes(from: reply)
            XCTAssertEqual(machine.received(count: reply.count, at: 110 * ms), .complete(frame: 0..<reply.count))
            XCTAssertEqual(machine.interruptedFrames, 1)
        }
    }

    func testFirstIndexMatchesALinearSearch() {
        var bytes = [UInt8](repeating: 0x55, count: 40)
        bytes.withUnsafeBytes { b in XCTAssertEqual(MasterTransaction.firstIndex(of: 1, in: b, from: 0, to: 40), 40) }
        for position in 0..<40 {
            for from in 0...position {
                bytes = [UInt8](repeating: 0x55, count: 40)
                bytes[position] = 0x01
                if position + 3 < 40 { bytes[position + 3] = 0x01 }
                bytes.withUnsafeBytes { b in
                    XCTAssertEqual(MasterTransaction.firstIndex(of: 1, in: b, from: from, to: 40), position)
                    XCTAssertEqual(MasterTransaction.firstIndex(of: 1, in: b, from: from, to: position), position)
                }
            }
        }
    }
}

/// The CRC table is a literal since issue 18: it must still be the table of polynomial 0xA001.
final class CRCTableTests: XCTestCase {
    func testLiteralTableMatchesThePolynomial() {
        XCTAssertEqual(CRC16.table.count, 256)
        XCTAssertEqual(CRC16.tables.count, 1024)
        for byte in 0..<256 {
            var crc = UInt16(byte)
            for _ in 0..<8 { crc = (crc & 1) != 0 ? (crc >> 1) ^ 0xA001 : crc >> 1 }
            XCTAssertEqual(CRC16.table[byte], crc, "entry \(byte)")
        }
        // Slicing by four equals the byte-wise definition at every length and alignment.
        var generator = SystemRandomNumberGenerator()
        for length in 0..<64 {
            let bytes = (0..<(length + 3)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            for offset in 0..<3 {
                let slice = Array(bytes[offset..<(offset + length)])
                var reference: UInt16 = 0xFFFF
                for b in slice {
                    reference ^= UInt16(b)
                    for _ in 0..<8 { reference = (reference & 1) != 0 ? (reference >> 1) ^ 0xA001 : reference >> 1 }
                }
                let sliced = bytes.withUnsafeBytes { CRC16.compute(UnsafeRawBufferPointer(rebasing: $0[offset..<(offset + length)])) }
                XCTAssertEqual(sliced, reference, "length \(length) offset \(offset)")
            }
        }
        // The spec's example: 01 03 00 00 00 01 → CRC 0x0A84 (sent 84 0A).
        XCTAssertEqual(CRC16.compute([0x01, 0x03, 0x00, 0x00, 0x00, 0x01] as [UInt8]), 0x0A84)
    }
}
