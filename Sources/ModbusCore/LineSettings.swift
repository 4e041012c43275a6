/// Serial line settings of an RS485 Modbus RTU link.
public struct LineSettings: Sendable, Hashable, CustomStringConvertible {
    public enum Parity: String, Sendable, CaseIterable, Decodable {
        case none, even, odd

        var letter: String {
            switch self {
            case .none: return "N"
            case .even: return "E"
            case .odd: return "O"
            }
        }
    }

    /// The baud rates the KPM33B offers.
    public static let meterBaudRates = [1200, 2400, 4800, 9600, 19200]
    /// KPM33B factory setting: 9600 baud, 8E1.
    public static let meterDefault = LineSettings(baud: 9600, parity: .even)

    public var baud: Int
    public var parity: Parity
    public var dataBits: Int
    public var stopBits: Int

    public init(baud: Int, parity: Parity, dataBits: Int = 8, stopBits: Int = 1) {
        self.baud = baud
        self.parity = parity
        self.dataBits = dataBits
        self.stopBits = stopBits
    }

    /// Start bit + data bits + parity bit + stop bits. 8E1 = 11, 8N1 = 10.
    public var bitsPerCharacter: Int { 1 + dataBits + (parity == .none ? 0 : 1) + stopBits }

    /// `9600 8E1`
    public var description: String { "\(baud) \(dataBits)\(parity.letter)\(stopBits)" }

    public var timing: FrameTiming { FrameTiming(self) }
}

/// Modbus serial-line timing derived from the line settings (Modbus over Serial Line V1.02, 2.5.1.1).
///
/// All values are nanoseconds. Up to 19200 baud t1.5 and t3.5 are 1.5 and 3.5 character times; above it the
/// spec fixes them at 750 µs and 1.75 ms, because the UART interrupt load would otherwise dominate.
public struct FrameTiming: Sendable, Hashable {
    public let characterNanos: UInt64
    public let t15Nanos: UInt64
    public let t35Nanos: UInt64

    public init(_ line: LineSettings) {
        precondition(line.baud > 0, "baud must be positive")
        let bitNanos = 1_000_000_000.0 / Double(line.baud)
        let character = bitNanos * Double(line.bitsPerCharacter)
        characterNanos = UInt64(character.rounded())
        if line.baud > 19200 {
            t15Nanos = 750_000
            t35Nanos = 1_750_000
        } else {
            t15Nanos = UInt64((character * 1.5).rounded())
            t35Nanos = UInt64((character * 3.5).rounded())
        }
    }

    /// Time the UART needs to shift out `bytes` characters back to back.
    public func wireNanos(bytes: Int) -> UInt64 { characterNanos * UInt64(bytes) }
}
