/// Modbus function codes the KPM33B speaks.
public enum FunctionCode: UInt8, Sendable, CaseIterable {
    case readCoils = 0x01
    case readHoldingRegisters = 0x03
    case writeSingleCoil = 0x05
    case writeMultipleRegisters = 0x10

    /// Set in the function code of an exception reply.
    public static let exceptionBit: UInt8 = 0x80
}

/// Modbus exception codes (Modbus Application Protocol V1.1b3, section 7).
public enum ExceptionCode: UInt8, Sendable {
    case illegalFunction = 0x01
    case illegalDataAddress = 0x02
    case illegalDataValue = 0x03
    case serverDeviceFailure = 0x04
    case acknowledge = 0x05
    case serverDeviceBusy = 0x06
    case gatewayPathUnavailable = 0x0A
    case gatewayTargetFailed = 0x0B

    public static func describe(_ code: UInt8) -> String {
        switch ExceptionCode(rawValue: code) {
        case .illegalFunction: return "illegal function"
        case .illegalDataAddress: return "illegal data address"
        case .illegalDataValue: return "illegal data value"
        case .serverDeviceFailure: return "server device failure"
        case .acknowledge: return "acknowledge"
        case .serverDeviceBusy: return "server device busy"
        case .gatewayPathUnavailable: return "gateway path unavailable"
        case .gatewayTargetFailed: return "gateway target failed to respond"
        case nil: return "exception \(code)"
        }
    }
}

/// The limits of RTU framing: an ADU is at most 256 bytes (address + PDU of 253 + CRC).
public enum ModbusLimits {
    public static let maxADU = 256
    public static let maxReadRegisters: UInt16 = 125
    public static let maxReadCoils: UInt16 = 2000
    public static let maxWriteRegisters: UInt16 = 123
}

/// One master request. Reads carry `start` and `quantity`; FC05 carries the coil value (`0xFF00` on, `0x0000`
/// off) in `value`; FC16 carries its register values in `values`.
public struct ModbusRequest: Sendable, Equatable {
    public var unit: UInt8
    public var function: FunctionCode
    public var start: UInt16
    public var quantity: UInt16
    public var value: UInt16
    public var values: [UInt16]

    public init(unit: UInt8, function: FunctionCode, start: UInt16, quantity: UInt16 = 0, value: UInt16 = 0,
                values: [UInt16] = []) {
        self.unit = unit
        self.function = function
        self.start = start
        self.quantity = quantity
        self.value = value
        self.values = values
    }

    public static func readHoldingRegisters(unit: UInt8, start: UInt16, count: UInt16) -> ModbusRequest {
        ModbusRequest(unit: unit, function: .readHoldingRegisters, start: start, quantity: count)
    }

    public static func readCoils(unit: UInt8, start: UInt16, count: UInt16) -> ModbusRequest {
        ModbusRequest(unit: unit, function: .readCoils, start: start, quantity: count)
    }

    public static func writeSingleCoil(unit: UInt8, address: UInt16, on: Bool) -> ModbusRequest {
        ModbusRequest(unit: unit, function: .writeSingleCoil, start: address, value: on ? 0xFF00 : 0x0000)
    }

    public static func writeMultipleRegisters(unit: UInt8, start: UInt16, values: [UInt16]) -> ModbusRequest {
        ModbusRequest(unit: unit, function: .writeMultipleRegisters, start: start, quantity: UInt16(values.count),
                      values: values)
    }

    /// Length of the normal (non-exception) reply ADU, CRC included.
    public var expectedReplyLength: Int {
        switch function {
        case .readCoils: return 5 + (Int(quantity) + 7) / 8
        case .readHoldingRegisters: return 5 + 2 * Int(quantity)
        case .writeSingleCoil, .writeMultipleRegisters: return 8
        }
    }

    /// Byte count field of a normal read reply.
    public var expectedByteCount: Int {
        switch function {
        case .readCoils: return (Int(quantity) + 7) / 8
        case .readHoldingRegisters: return 2 * Int(quantity)
        case .writeSingleCoil, .writeMultipleRegisters: return 0
        }
    }

    /// Why this request cannot be sent, or nil when it is valid.
    public var validationError: String? {
        if unit == 0 || unit > 247 { return "unit address \(unit) is outside 1…247" }
        switch function {
        case .readHoldingRegisters where quantity == 0 || quantity > ModbusLimits.maxReadRegisters:
            return "FC03 reads 1…125 registers, not \(quantity)"
        case .readCoils where quantity == 0 || quantity > ModbusLimits.maxReadCoils:
            return "FC01 reads 1…2000 coils, not \(quantity)"
        case .writeSingleCoil where value != 0xFF00 && value != 0x0000:
            return "FC05 value must be 0xFF00 or 0x0000"
        case .writeMultipleRegisters where values.isEmpty || values.count > Int(ModbusLimits.maxWriteRegisters):
            return "FC16 writes 1…123 registers, not \(values.count)"
        default:
            return nil
        }
    }

    /// Encodes the request ADU (CRC included) into `buffer`; returns its length.
    /// The buffer must hold `ModbusLimits.maxADU` bytes.
    public func encode(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        precondition(buffer.count >= ModbusLimits.maxADU, "ADU buffer too small")
        var w = ADUWriter(buffer)
        w.byte(unit)
        w.byte(function.rawValue)
        w.word(start)
        switch function {
        case .readCoils, .readHoldingRegisters:
            w.word(quantity)
        case .writeSingleCoil:
            w.word(value)
        case .writeMultipleRegisters:
            w.word(UInt16(values.count))
            w.byte(UInt8(truncatingIfNeeded: values.count * 2))
            for v in values { w.word(v) }
        }
        return w.finishWithCRC()
    }
}

/// Appends big-endian fields to a caller-owned buffer and closes the frame with the CRC (low byte first).
public struct ADUWriter {
    let buffer: UnsafeMutableRawBufferPointer
    public private(set) var count = 0

    public init(_ buffer: UnsafeMutableRawBufferPointer) { self.buffer = buffer }

    public mutating func byte(_ b: UInt8) {
        buffer[count] = b
        count += 1
    }

    public mutating func word(_ w: UInt16) {
        byte(UInt8(w >> 8))
        byte(UInt8(w & 0xFF))
    }

    public mutating func finishWithCRC() -> Int {
        let crc = CRC16.compute(UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
        byte(UInt8(crc & 0xFF))
        byte(UInt8(crc >> 8))
        return count
    }
}

/// Big-endian field access into a received frame.
public extension UnsafeRawBufferPointer {
    func word(at offset: Int) -> UInt16 { UInt16(self[offset]) << 8 | UInt16(self[offset + 1]) }

    /// IEEE-754 float32 from two registers, high word first (the KPM33B's order).
    func float32(at offset: Int) -> Float {
        let bits = UInt32(self[offset]) << 24 | UInt32(self[offset + 1]) << 16
            | UInt32(self[offset + 2]) << 8 | UInt32(self[offset + 3])
        return Float(bitPattern: bits)
    }
}

public extension Float {
    /// The two registers (high word first) that carry this value on the KPM33B.
    var registerWords: (UInt16, UInt16) {
        let bits = bitPattern
        return (UInt16(bits >> 16), UInt16(bits & 0xFFFF))
    }
}
