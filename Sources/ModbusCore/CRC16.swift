/// CRC-16/MODBUS: polynomial 0xA001 (reflected 0x8005), initial value 0xFFFF, sent low byte first.
public enum CRC16 {
    /// Table-driven; built once at first use, never per frame.
    private static let table: [UInt16] = (0..<256).map { byte -> UInt16 in
        var crc = UInt16(byte)
        for _ in 0..<8 {
            crc = (crc & 1) != 0 ? (crc >> 1) ^ 0xA001 : crc >> 1
        }
        return crc
    }

    public static func compute(_ bytes: UnsafeRawBufferPointer) -> UInt16 {
        var crc: UInt16 = 0xFFFF
        table.withUnsafeBufferPointer { t in
            for byte in bytes {
                crc = (crc >> 8) ^ t[Int((crc ^ UInt16(byte)) & 0xFF)]
            }
        }
        return crc
    }

    public static func compute<C: Collection>(_ bytes: C) -> UInt16 where C.Element == UInt8 {
        var crc: UInt16 = 0xFFFF
        for byte in bytes {
            crc = (crc >> 8) ^ table[Int((crc ^ UInt16(byte)) & 0xFF)]
        }
        return crc
    }

    /// True when the last two bytes of `frame` are the CRC of the bytes before them (low byte first).
    public static func isValid(_ frame: UnsafeRawBufferPointer) -> Bool {
        guard frame.count >= 4 else { return false }
        let body = UnsafeRawBufferPointer(rebasing: frame[0..<(frame.count - 2)])
        let crc = compute(body)
        return frame[frame.count - 2] == UInt8(crc & 0xFF) && frame[frame.count - 1] == UInt8(crc >> 8)
    }
}
