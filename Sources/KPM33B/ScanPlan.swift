import ModbusCore

/// The order and timing of `meterext scan` (issue 14): pure, so the order, the waits and the physical minimum can
/// be checked without a bus.
///
/// Order: address 1 at every line setting (a meter whose baud or format was changed), then the factory line
/// (9600 8E1) at every address, then the other baud rates in the factory format, then the rare formats (8O1, 8N1).
/// Each probe reads two registers (request 8 bytes, reply 9 bytes). The wait for a reply is derived from the line:
/// the reply's time on the wire (added by the master) plus t3.5 plus a latency margin for the meter and the adapter,
/// not a fixed 150 ms.
public struct ScanPlan: Sendable {
    public struct Probe: Sendable, Hashable {
        public var line: LineSettings
        public var address: UInt8
    }

    /// FC03 request for 2 registers: unit, function, start (2), count (2), CRC (2).
    public static let requestBytes = 8
    /// Its reply: unit, function, byte count, 4 data bytes, CRC (2).
    public static let replyBytes = 9
    /// Latency allowed for the meter to start answering after t3.5 and for the adapter to pass the bytes on; a
    /// USB adapter's latency timer (1 ms on Linux's ftdi_sio with low_latency, up to 16 ms otherwise) dominates.
    /// A reply later than that is not lost: it arrives during the next probe and the scan asks again, patiently.
    public static let defaultLatencyMarginNanos: UInt64 = 15_000_000

    public var lines: [LineSettings]
    public var addresses: ClosedRange<UInt8>
    public var latencyMarginNanos: UInt64

    public init(lines: [LineSettings] = ScanPlan.likeliestLines(), addresses: ClosedRange<UInt8> = 1...247,
                latencyMarginNanos: UInt64 = ScanPlan.defaultLatencyMarginNanos) {
        self.lines = lines
        self.addresses = addresses
        self.latencyMarginNanos = latencyMarginNanos
    }

    /// Factory setting first, then the factory format at the other rates (fastest first), then the rare formats.
    public static func likeliestLines() -> [LineSettings] {
        let rates = [9600] + LineSettings.meterBaudRates.reversed().filter { $0 != 9600 }
        return [LineSettings.Parity.even, .odd, .none].flatMap { parity in
            rates.map { LineSettings(baud: $0, parity: parity) }
        }
    }

    /// Every probe, likeliest first, each (line, address) once.
    public var probes: [Probe] {
        var result: [Probe] = []
        var seen: Set<Probe> = []
        func add(_ p: Probe) { if seen.insert(p).inserted { result.append(p) } }
        if addresses.contains(1) { for line in lines { add(Probe(line: line, address: 1)) } }
        for line in lines { for address in addresses { add(Probe(line: line, address: address)) } }
        return result
    }

    /// The master's deadline after sending is response timeout + the reply's wire time + the inter-byte allowance:
    /// here t3.5 for the timeout, the latency margin for the allowance, so a probe waits t3.5 + reply + margin.
    public func responseTimeoutNanos(_ line: LineSettings) -> UInt64 { line.timing.t35Nanos }
    public var interByteTimeoutNanos: UInt64 { latencyMarginNanos }

    /// How long a probe of a silent address takes: request on the wire, t3.5, margin, the reply's wire time.
    public func probeNanos(_ line: LineSettings) -> UInt64 {
        let t = line.timing
        return t.wireNanos(bytes: Self.requestBytes) + responseTimeoutNanos(line) + t.wireNanos(bytes: Self.replyBytes)
            + interByteTimeoutNanos
    }

    /// The physical minimum of one probe: request and reply on the wire and a t3.5 gap after each.
    public static func physicalMinimumNanos(_ line: LineSettings) -> UInt64 {
        let t = line.timing
        return t.wireNanos(bytes: requestBytes) + t.wireNanos(bytes: replyBytes) + 2 * t.t35Nanos
    }
}
