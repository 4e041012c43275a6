import KPM33B
import ModbusCore
@testable import ModbusTCP
import XCTest

/// Issue 17: MBAP framing, the request classifier and snapshot → register encoding, without I/O.
final class MBAPCodecTests: XCTestCase {
    func testDecodesOneFrameAndLeavesTheRest() {
        let bytes: [UInt8] = [0x12, 0x34, 0, 0, 0, 6, 1, 3, 0, 0x30, 0, 2, 0xAA]
        XCTAssertEqual(MBAP.decode(bytes), .frame(MBAP.Frame(transaction: 0x1234, unit: 1, pdu: [3, 0, 0x30, 0, 2]), consumed: 12))
        XCTAssertEqual(MBAP.decode(Array(bytes[12...])), .needMore)
    }

    func testPartialFramesWaitForMore() {
        let bytes: [UInt8] = [0, 1, 0, 0, 0, 6, 1, 3, 0, 0x30, 0, 2]
        for n in 0..<bytes.count { XCTAssertEqual(MBAP.decode(Array(bytes[..<n])), .needMore, "prefix \(n)") }
    }

    func testRejectsWrongProtocolAndLengths() {
        guard case .invalid = MBAP.decode([0, 1, 0, 1, 0, 6, 1, 3, 0, 0, 0, 1]) else { return XCTFail("protocol id 1") }
        guard case .invalid = MBAP.decode([0, 1, 0, 7]) else { return XCTFail("protocol id seen early") }
        guard case .invalid = MBAP.decode([0, 1, 0, 0, 0, 1, 1]) else { return XCTFail("length 1 (no PDU)") }
        guard case .invalid = MBAP.decode([0, 1, 0, 0, 0, 0, 1]) else { return XCTFail("length 0") }
        guard case .invalid = MBAP.decode([0, 1, 0, 0, 0xFF, 0xFF, 1]) else { return XCTFail("length 65535") }
        guard case .invalid = MBAP.decode([0, 1, 0, 0, 0, 255, 1]) else { return XCTFail("length 255") }
        // 254 is the largest legal length: it waits for the bytes.
        XCTAssertEqual(MBAP.decode([0, 1, 0, 0, 0, 254, 1, 3]), .needMore)
    }

    func testEncodeRoundTrips() {
        let adu = MBAP.encode(transaction: 0xBEEF, unit: 7, pdu: [0x83, 0x0B])
        XCTAssertEqual(adu, [0xBE, 0xEF, 0, 0, 0, 3, 7, 0x83, 0x0B])
        XCTAssertEqual(MBAP.decode(adu), .frame(MBAP.Frame(transaction: 0xBEEF, unit: 7, pdu: [0x83, 0x0B]), consumed: 9))
    }
}

final class ClassifierTests: XCTestCase {
    func classify(_ pdu: [UInt8], unit: UInt8 = 1, known: Bool = true, write: Bool = false) -> ModbusTCPAction {
        ModbusTCPClassifier.classify(unit: unit, pdu: pdu, knownUnit: known, mayWrite: write)
    }

    func testMeasurementAndEnergyReadsComeFromTheSnapshot() {
        XCTAssertEqual(classify([3, 0, 0x30, 0, 52]), .readSnapshot(unit: 1, start: 0x30, count: 52))
        XCTAssertEqual(classify([3, 0, 0x68, 0, 52]), .readSnapshot(unit: 1, start: 0x68, count: 52))
        XCTAssertEqual(classify([3, 0, 0x31, 0, 1]), .readSnapshot(unit: 1, start: 0x31, count: 1))
    }

    func testOtherReadsAreForwarded() {
        // Straddles the gap between the blocks, parameters, history, demand.
        XCTAssertEqual(classify([3, 0, 0x62, 0, 8]), .forward(.readHoldingRegisters(unit: 1, start: 0x62, count: 8)))
        XCTAssertEqual(classify([3, 0, 0x12, 0, 7]), .forward(.readHoldingRegisters(unit: 1, start: 0x12, count: 7)))
        XCTAssertEqual(classify([1, 0, 1, 0, 1]), .forward(.readCoils(unit: 1, start: 1, count: 1)))
    }

    func testWritesNeedTheAllowList() {
        XCTAssertEqual(classify([5, 0, 1, 0xFF, 0]), .reply([0x85, 0x01]))
        XCTAssertEqual(classify([5, 0, 1, 0xFF, 0], write: true),
                       .forward(.writeSingleCoil(unit: 1, address: 1, on: true)))
        XCTAssertEqual(classify([0x10, 0, 0x1E, 0, 1, 2, 0x12, 0x34]), .reply([0x90, 0x01]))
        XCTAssertEqual(classify([0x10, 0, 0x1E, 0, 1, 2, 0x12, 0x34], write: true),
                       .forward(.writeMultipleRegisters(unit: 1, start: 0x1E, values: [0x1234])))
    }

    func testMalformedRequestsGetExceptions() {
        XCTAssertEqual(classify([0x2B, 0x0E, 1, 0]), .reply([0xAB, 0x01]), "unknown function")
        XCTAssertEqual(classify([0x04, 0, 0, 0, 1]), .reply([0x84, 0x01]), "FC04 is not a KPM33B function")
        XCTAssertEqual(classify([3, 0, 0x30, 0, 0]), .reply([0x83, 0x03]), "zero registers")
        XCTAssertEqual(classify([3, 0, 0x30, 0, 126]), .reply([0x83, 0x03]), "too many registers")
        XCTAssertEqual(classify([3, 0, 0x30]), .reply([0x83, 0x03]), "short PDU")
        XCTAssertEqual(classify([3, 0xFF, 0xFF, 0, 2]), .reply([0x83, 0x02]), "past the end of the address space")
        XCTAssertEqual(classify([5, 0, 1, 0x12, 0x34], write: true), .reply([0x85, 0x03]), "coil value")
        XCTAssertEqual(classify([0x10, 0, 0, 0, 2, 2, 0, 0], write: true), .reply([0x90, 0x03]), "byte count")
        XCTAssertEqual(classify([0x10, 0, 0, 0, 1, 2, 0, 0, 9], write: true), .reply([0x90, 0x03]), "trailing byte")
        XCTAssertEqual(classify([3, 0, 0x30, 0, 2], unit: 9, known: false), .reply([0x83, 0x0A]), "unknown unit")
    }

    func testForwardOutcomesBecomeReplies() {
        XCTAssertEqual(ModbusTCPClassifier.replyPDU(.reply([3, 2, 0, 1]), function: 3), [3, 2, 0, 1])
        XCTAssertEqual(ModbusTCPClassifier.replyPDU(.exception(2), function: 3), [0x83, 2])
        XCTAssertEqual(ModbusTCPClassifier.replyPDU(.failed, function: 5), [0x85, 0x0B])
    }
}

final class SnapshotRegistersTests: XCTestCase {
    /// Every class of float bit pattern comes back out of the registers with the same bits.
    func testEveryFloatBitPatternClassRoundTrips() {
        let patterns: [UInt32] = [
            0x0000_0000, 0x8000_0000,              // +0, -0
            0x0000_0001, 0x807F_FFFF,              // subnormals
            0x7F80_0000, 0xFF80_0000,              // ±inf
            0x7FC0_0000, 0xFFC0_0001, 0x7FA0_0001, // quiet NaN, negative NaN with payload, signalling NaN
            0x7F7F_FFFF, 0x0080_0000,              // largest finite, smallest normal
            0x4366_6666,                           // 230.4
        ]
        var snapshot = MeterSnapshot()
        snapshot.health = .online
        var basic = [Float](repeating: 1, count: 26)
        for (i, p) in patterns.enumerated() { basic[i] = Float(bitPattern: p) }
        snapshot.basic = basic
        let registers = SnapshotRegisters(snapshot)
        guard let pdu = registers.readReply(start: 0x30, count: UInt16(2 * patterns.count)) else {
            return XCTFail("basic block not served")
        }
        XCTAssertEqual(pdu[0], 3)
        XCTAssertEqual(Int(pdu[1]), 4 * patterns.count)
        for (i, p) in patterns.enumerated() {
            let o = 2 + 4 * i
            let bits = UInt32(pdu[o]) << 24 | UInt32(pdu[o + 1]) << 16 | UInt32(pdu[o + 2]) << 8 | UInt32(pdu[o + 3])
            XCTAssertEqual(bits, p, String(format: "pattern %08X", p))
        }
        // Odd start: the low word of the first float, then the next float's high word.
        XCTAssertEqual(registers.readReply(start: 0x31, count: 2), [3, 4, 0, 0, 0x80, 0])
        // The energy block was never read: nothing to serve.
        XCTAssertNil(registers.readReply(start: 0x68, count: 2))
    }

    func testOnlyCurrentSnapshotsAreServed() {
        var s = MeterSnapshot()
        s.publishedAt = 1000
        for health in [LinkHealth.starting, .stale, .offline] {
            s.health = health
            XCTAssertFalse(SnapshotRegisters.isCurrent(s, now: 1000, maxAgeSeconds: 5), "\(health)")
        }
        s.health = .online
        XCTAssertTrue(SnapshotRegisters.isCurrent(s, now: 1005, maxAgeSeconds: 5))
        XCTAssertFalse(SnapshotRegisters.isCurrent(s, now: 1006, maxAgeSeconds: 5), "loop stuck: old values")
    }
}

final class AllowListTests: XCTestCase {
    func testAddressesAndPrefixes() throws {
        let list = try ModbusTCPAllowList(["192.168.1.20", "10.0.0.0/8", "fd00::/8", "::1"])
        XCTAssertTrue(list.permits("192.168.1.20"))
        XCTAssertFalse(list.permits("192.168.1.21"))
        XCTAssertTrue(list.permits("10.200.3.4"))
        XCTAssertTrue(list.permits("::ffff:10.1.1.1"), "IPv4-mapped peers match IPv4 entries")
        XCTAssertTrue(list.permits("fdab::1"))
        XCTAssertFalse(list.permits("fe80::1"))
        XCTAssertTrue(list.permits("::1"))
        XCTAssertFalse(list.permits("127.0.0.1"))
        XCTAssertFalse(list.permits("garbage"))
        XCTAssertTrue(try ModbusTCPAllowList(["0.0.0.0/0"]).permits("8.8.8.8"))
        XCTAssertTrue(try ModbusTCPAllowList(["10.1.2.3/31"]).permits("10.1.2.2"))
        XCTAssertFalse(try ModbusTCPAllowList([]).permits("127.0.0.1"))
        XCTAssertThrowsError(try ModbusTCPAllowList(["10.0.0.0/33"]))
        XCTAssertThrowsError(try ModbusTCPAllowList(["host.example"]))
        XCTAssertThrowsError(try ModbusTCPAllowList(["1.2.3.4/8/8"]))
    }
}
