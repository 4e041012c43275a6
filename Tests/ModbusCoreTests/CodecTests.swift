import XCTest
@testable import ModbusCore

func hex(_ s: String) -> [UInt8] {
    s.split(separator: " ").map { UInt8($0, radix: 16)! }
}

func encode(_ request: ModbusRequest) -> [UInt8] {
    var buf = [UInt8](repeating: 0, count: ModbusLimits.maxADU)
    let n = buf.withUnsafeMutableBytes { request.encode(into: $0) }
    return Array(buf[0..<n])
}

final class CodecTests: XCTestCase {
    func testCRCMatchesTheManualsRelayStatusReply() {
        // KPM33B manual 6.1.1: response frame 01 01 01 01 with CRC16 hi/lo printed as 90 48 (sent 90 first).
        XCTAssertEqual(CRC16.compute(hex("01 01 01 01")), 0x4890)
        XCTAssertTrue(hex("01 01 01 01 90 48").withUnsafeBytes { CRC16.isValid($0) })
        XCTAssertFalse(hex("01 01 01 01 48 90").withUnsafeBytes { CRC16.isValid($0) })
    }

    func testWellKnownRequestFrames() {
        // The Modbus spec's classic example and the manual's relay frames.
        XCTAssertEqual(encode(.readHoldingRegisters(unit: 1, start: 0, count: 10)), hex("01 03 00 00 00 0A C5 CD"))
        XCTAssertEqual(encode(.readCoils(unit: 1, start: 1, count: 1)), hex("01 01 00 01 00 01 AC 0A"))
        XCTAssertEqual(encode(.writeSingleCoil(unit: 1, address: 1, on: true)), hex("01 05 00 01 FF 00 DD FA"))
        XCTAssertEqual(encode(.writeSingleCoil(unit: 1, address: 1, on: false)), hex("01 05 00 01 00 00 9C 0A"))
        XCTAssertEqual(encode(.readHoldingRegisters(unit: 1, start: 0x30, count: 52)), hex("01 03 00 30 00 34 44 12"))
    }

    func testWriteMultipleRegistersFrame() {
        let frame = encode(.writeMultipleRegisters(unit: 1, start: 0x001E, values: [0xDD22]))
        XCTAssertEqual(Array(frame[0..<9]), hex("01 10 00 1E 00 01 02 DD 22"))
        XCTAssertEqual(frame.count, 11)
        XCTAssertTrue(frame.withUnsafeBytes { CRC16.isValid($0) })
    }

    func testExpectedReplyLengths() {
        XCTAssertEqual(ModbusRequest.readHoldingRegisters(unit: 1, start: 0x30, count: 52).expectedReplyLength, 109)
        XCTAssertEqual(ModbusRequest.readCoils(unit: 1, start: 1, count: 3).expectedReplyLength, 6)
        XCTAssertEqual(ModbusRequest.readCoils(unit: 1, start: 1, count: 9).expectedReplyLength, 7)
        XCTAssertEqual(ModbusRequest.writeSingleCoil(unit: 1, address: 1, on: true).expectedReplyLength, 8)
    }

    func testValidation() {
        XCTAssertNil(ModbusRequest.readHoldingRegisters(unit: 1, start: 0, count: 125).validationError)
        XCTAssertNotNil(ModbusRequest.readHoldingRegisters(unit: 1, start: 0, count: 126).validationError)
        XCTAssertNotNil(ModbusRequest.readHoldingRegisters(unit: 0, start: 0, count: 1).validationError)
        XCTAssertNotNil(ModbusRequest.readHoldingRegisters(unit: 248, start: 0, count: 1).validationError)
        XCTAssertNotNil(ModbusRequest(unit: 1, function: .writeSingleCoil, start: 1, value: 0x1234).validationError)
    }

    func testFloatWordsRoundTrip() {
        let value: Float = 230.7
        let (hi, lo) = value.registerWords
        let bytes: [UInt8] = [UInt8(hi >> 8), UInt8(hi & 0xFF), UInt8(lo >> 8), UInt8(lo & 0xFF)]
        // 230.7f = 0x4366B333
        XCTAssertEqual(bytes, hex("43 66 B3 33"))
        XCTAssertEqual(bytes.withUnsafeBytes { $0.float32(at: 0) }, value)
    }

    func testSlaveParsesRequestsAndRejectsBadCRC() {
        let read = hex("01 03 00 30 00 34 44 12")
        XCTAssertEqual(read.withUnsafeBytes { SlaveCodec.parse($0) },
                       .request(.readHoldingRegisters(unit: 1, start: 0x30, count: 52), length: 8))
        var bad = read
        bad[7] ^= 0xFF
        XCTAssertEqual(bad.withUnsafeBytes { SlaveCodec.parse($0) }, .skip)
        XCTAssertEqual(Array(read[0..<5]).withUnsafeBytes { SlaveCodec.parse($0) }, .needMore)
        let write = encode(.writeMultipleRegisters(unit: 1, start: 0x1E, values: [0xDD11]))
        XCTAssertEqual(write.withUnsafeBytes { SlaveCodec.parse($0) },
                       .request(ModbusRequest(unit: 1, function: .writeMultipleRegisters, start: 0x1E, quantity: 1,
                                              values: [0xDD11]), length: 11))
        var unknown = hex("01 2B 0E 01 00 00")
        let crc = CRC16.compute(unknown)
        unknown += [UInt8(crc & 0xFF), UInt8(crc >> 8)]
        XCTAssertEqual(unknown.withUnsafeBytes { SlaveCodec.parse($0) },
                       .unsupported(unit: 1, function: 0x2B, length: 8))
    }

    func testSlaveRepliesMatchTheManual() {
        var buf = [UInt8](repeating: 0, count: ModbusLimits.maxADU)
        let n = buf.withUnsafeMutableBytes { SlaveCodec.encodeCoils(unit: 1, count: 1, into: $0) { _ in true } }
        XCTAssertEqual(Array(buf[0..<n]), hex("01 01 01 01 90 48"))
        let e = buf.withUnsafeMutableBytes {
            SlaveCodec.encodeException(unit: 1, function: 0x03, code: .illegalDataAddress, into: $0)
        }
        XCTAssertEqual(Array(buf[0..<e]), hex("01 83 02 C0 F1"))
        let echo = buf.withUnsafeMutableBytes {
            SlaveCodec.encodeWriteEcho(.writeSingleCoil(unit: 1, address: 1, on: true), into: $0)
        }
        XCTAssertEqual(Array(buf[0..<echo]), hex("01 05 00 01 FF 00 DD FA"))
    }
}

final class FrameTimingTests: XCTestCase {
    func testNineSixHundredEvenParity() {
        let t = LineSettings(baud: 9600, parity: .even).timing
        // 11 bits per character at 9600 baud: 1.1458 ms; t3.5 = 4.010 ms (reference table).
        XCTAssertEqual(t.characterNanos, 1_145_833)
        XCTAssertEqual(t.t15Nanos, 1_718_750)
        XCTAssertEqual(t.t35Nanos, 4_010_417)
        // A 52-register read: 8-byte request + 109-byte reply = 134.1 ms on the wire.
        XCTAssertEqual(Double(t.wireNanos(bytes: 117)) / 1e6, 134.06, accuracy: 0.01)
    }

    func testNoParityUsesTenBits() {
        let t = LineSettings(baud: 19200, parity: .none).timing
        XCTAssertEqual(LineSettings(baud: 19200, parity: .none).bitsPerCharacter, 10)
        XCTAssertEqual(t.characterNanos, 520_833)
    }

    func testFixedValuesAbove19200() {
        let t = LineSettings(baud: 38400, parity: .even).timing
        XCTAssertEqual(t.t15Nanos, 750_000)
        XCTAssertEqual(t.t35Nanos, 1_750_000)
        XCTAssertEqual(LineSettings(baud: 19200, parity: .even).timing.t35Nanos, 2_005_208)
    }

    func testDescription() {
        XCTAssertEqual(LineSettings.meterDefault.description, "9600 8E1")
        XCTAssertEqual(LineSettings(baud: 2400, parity: .odd).description, "2400 8O1")
    }
}

final class RetryPolicyTests: XCTestCase {
    func testOnlyTransientExceptionsAreRetried() {
        let policy = RetryPolicy(attempts: 3)
        XCTAssertTrue(policy.shouldRetry(after: .transaction(.crcMismatch), attempt: 1))
        XCTAssertTrue(policy.shouldRetry(after: .transaction(.noReply), attempt: 2))
        XCTAssertFalse(policy.shouldRetry(after: .transaction(.noReply), attempt: 3))
        XCTAssertFalse(policy.shouldRetry(after: .transaction(.exception(2)), attempt: 1))
        XCTAssertTrue(policy.shouldRetry(after: .transaction(.exception(6)), attempt: 1))
        XCTAssertFalse(policy.shouldRetry(after: .invalidRequest, attempt: 1))
    }
}
