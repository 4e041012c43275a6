/// The slave side of RTU framing: finds requests in received bytes and encodes replies.
/// Used by the KPM33B simulator; pure, like the rest of this module.
public enum SlaveCodec {
    public enum Parse: Equatable {
        /// A CRC-valid request occupies `length` bytes at the start of the input.
        case request(ModbusRequest, length: Int)
        /// A valid frame with an unsupported function code: answer with exception 1.
        case unsupported(unit: UInt8, function: UInt8, length: Int)
        /// Not enough bytes yet.
        case needMore
        /// The first byte cannot start a valid frame: drop it and try again.
        case skip
    }

    /// Looks for one request at the start of `bytes`.
    public static func parse(_ bytes: UnsafeRawBufferPointer) -> Parse {
        guard bytes.count >= 2 else { return .needMore }
        let unit = bytes[0]
        let fc = bytes[1]
        let length: Int
        switch FunctionCode(rawValue: fc) {
        case .readCoils, .readHoldingRegisters, .writeSingleCoil:
            length = 8
        case .writeMultipleRegisters:
            guard bytes.count >= 7 else { return .needMore }
            length = 9 + Int(bytes[6])
        case nil:
            // Unknown functions have unknown lengths: accept the common 8-byte form if its CRC holds.
            guard bytes.count >= 8 else { return .needMore }
            let frame = UnsafeRawBufferPointer(rebasing: bytes[0..<8])
            return CRC16.isValid(frame) ? .unsupported(unit: unit, function: fc, length: 8) : .skip
        }
        guard bytes.count >= length else { return .needMore }
        let frame = UnsafeRawBufferPointer(rebasing: bytes[0..<length])
        guard CRC16.isValid(frame) else { return .skip }
        let function = FunctionCode(rawValue: fc)!
        let start = frame.word(at: 2)
        switch function {
        case .readCoils, .readHoldingRegisters:
            return .request(ModbusRequest(unit: unit, function: function, start: start, quantity: frame.word(at: 4)),
                            length: length)
        case .writeSingleCoil:
            return .request(ModbusRequest(unit: unit, function: function, start: start, value: frame.word(at: 4)),
                            length: length)
        case .writeMultipleRegisters:
            let quantity = frame.word(at: 4)
            guard Int(frame[6]) == Int(quantity) * 2 else { return .skip }
            var values: [UInt16] = []
            values.reserveCapacity(Int(quantity))
            for i in 0..<Int(quantity) { values.append(frame.word(at: 7 + 2 * i)) }
            return .request(ModbusRequest(unit: unit, function: function, start: start, quantity: quantity,
                                          values: values), length: length)
        }
    }

    /// Exception reply: unit, function | 0x80, code, CRC.
    public static func encodeException(unit: UInt8, function: UInt8, code: ExceptionCode,
                                       into buffer: UnsafeMutableRawBufferPointer) -> Int {
        var w = ADUWriter(buffer)
        w.byte(unit)
        w.byte(function | FunctionCode.exceptionBit)
        w.byte(code.rawValue)
        return w.finishWithCRC()
    }

    /// FC03 reply with `count` registers produced by `register(index)`.
    public static func encodeRegisters(unit: UInt8, count: Int, into buffer: UnsafeMutableRawBufferPointer,
                                       register: (Int) -> UInt16) -> Int {
        var w = ADUWriter(buffer)
        w.byte(unit)
        w.byte(FunctionCode.readHoldingRegisters.rawValue)
        w.byte(UInt8(count * 2))
        for i in 0..<count { w.word(register(i)) }
        return w.finishWithCRC()
    }

    /// FC01 reply with `count` coils produced by `coil(index)`, packed LSB first.
    public static func encodeCoils(unit: UInt8, count: Int, into buffer: UnsafeMutableRawBufferPointer,
                                   coil: (Int) -> Bool) -> Int {
        var w = ADUWriter(buffer)
        w.byte(unit)
        w.byte(FunctionCode.readCoils.rawValue)
        let bytes = (count + 7) / 8
        w.byte(UInt8(bytes))
        for b in 0..<bytes {
            var packed: UInt8 = 0
            for bit in 0..<8 where b * 8 + bit < count && coil(b * 8 + bit) {
                packed |= 1 << UInt8(bit)
            }
            w.byte(packed)
        }
        return w.finishWithCRC()
    }

    /// FC05/FC16 reply: echoes the address and the value (FC05) or quantity (FC16).
    public static func encodeWriteEcho(_ request: ModbusRequest, into buffer: UnsafeMutableRawBufferPointer) -> Int {
        var w = ADUWriter(buffer)
        w.byte(request.unit)
        w.byte(request.function.rawValue)
        w.word(request.start)
        w.word(request.function == .writeSingleCoil ? request.value : UInt16(request.values.count))
        return w.finishWithCRC()
    }
}
