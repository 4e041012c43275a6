import KPM33B
import ModbusCore

/// Modbus TCP framing (MBAP header), I/O-free (issue 17).
///
/// An ADU is `transaction id (2) | protocol id (2, always 0) | length (2) | unit id (1) | PDU`, where `length`
/// counts the unit id and the PDU. A PDU is at most 253 bytes, so a length outside 2…254 or a protocol id other
/// than 0 can never be a Modbus request: the connection is not Modbus and is closed.
public enum MBAP {
    public static let headerLength = 7
    public static let maxPDU = 253

    public struct Frame: Sendable, Equatable {
        public var transaction: UInt16
        public var unit: UInt8
        public var pdu: [UInt8]

        public init(transaction: UInt16, unit: UInt8, pdu: [UInt8]) {
            self.transaction = transaction
            self.unit = unit
            self.pdu = pdu
        }
    }

    public enum Decoded: Sendable, Equatable {
        /// Not a whole frame yet.
        case needMore
        /// One frame and how many bytes of the input it took.
        case frame(Frame, consumed: Int)
        /// Not Modbus TCP: close the connection.
        case invalid(String)
    }

    /// Decodes the first frame in `bytes`.
    public static func decode<C: Collection>(_ bytes: C) -> Decoded where C.Element == UInt8, C.Index == Int {
        let b = bytes.startIndex
        guard bytes.count >= headerLength else {
            // A protocol id that is already visibly wrong need not wait for more bytes.
            if bytes.count >= 4, bytes[b + 2] != 0 || bytes[b + 3] != 0 { return .invalid("protocol id is not 0") }
            return .needMore
        }
        let protocolID = UInt16(bytes[b + 2]) << 8 | UInt16(bytes[b + 3])
        guard protocolID == 0 else { return .invalid("protocol id \(protocolID) is not 0 (Modbus)") }
        let length = Int(bytes[b + 4]) << 8 | Int(bytes[b + 5])
        guard length >= 2 && length <= maxPDU + 1 else { return .invalid("length \(length) outside 2…254") }
        let total = 6 + length
        guard bytes.count >= total else { return .needMore }
        let frame = Frame(transaction: UInt16(bytes[b]) << 8 | UInt16(bytes[b + 1]), unit: bytes[b + 6],
                          pdu: Array(bytes[(b + 7)..<(b + total)]))
        return .frame(frame, consumed: total)
    }

    /// The ADU for `pdu` (at most 253 bytes).
    public static func encode(transaction: UInt16, unit: UInt8, pdu: [UInt8]) -> [UInt8] {
        precondition(pdu.count <= maxPDU)
        let length = pdu.count + 1
        var out: [UInt8] = [UInt8(transaction >> 8), UInt8(transaction & 0xFF), 0, 0,
                            UInt8(length >> 8), UInt8(length & 0xFF), unit]
        out.reserveCapacity(7 + pdu.count)
        out.append(contentsOf: pdu)
        return out
    }

    /// An exception PDU for function `function`.
    public static func exception(_ function: UInt8, _ code: UInt8) -> [UInt8] {
        [function | FunctionCode.exceptionBit, code]
    }
}

/// What to do with one request PDU. Pure: the executor (`ModbusTCPServer`) performs it.
public enum ModbusTCPAction: Sendable, Equatable {
    /// Answer at once with this PDU (an exception).
    case reply([UInt8])
    /// FC03 inside the measurement or energy block: answer from the meter's latest snapshot, no bus traffic.
    case readSnapshot(unit: UInt8, start: UInt16, count: UInt16)
    /// Put on the bus between poll transactions.
    case forward(ModbusRequest)
}

/// Decides what a request PDU from a Modbus TCP master becomes (issue 17).
public enum ModbusTCPClassifier {
    /// Register blocks served from the snapshot: the measurement block and the energy block.
    public static let snapshotBlocks: [RegisterBlock] = [KPM33BMap.basic, KPM33BMap.energy]

    /// - Parameters:
    ///   - unit: the MBAP unit id (= the meter's Modbus address).
    ///   - knownUnit: whether a meter with this address is on the bus.
    ///   - mayWrite: whether the peer is on the write allow-list.
    public static func classify(unit: UInt8, pdu: [UInt8], knownUnit: Bool, mayWrite: Bool) -> ModbusTCPAction {
        guard let fc = pdu.first else { return .reply(MBAP.exception(0, ExceptionCode.illegalFunction.rawValue)) }
        func ex(_ code: ExceptionCode) -> ModbusTCPAction { .reply(MBAP.exception(fc, code.rawValue)) }
        func word(_ at: Int) -> UInt16 { UInt16(pdu[at]) << 8 | UInt16(pdu[at + 1]) }
        guard let function = FunctionCode(rawValue: fc) else { return ex(.illegalFunction) }
        guard knownUnit else { return ex(.gatewayPathUnavailable) }
        switch function {
        case .readHoldingRegisters:
            guard pdu.count == 5 else { return ex(.illegalDataValue) }
            let start = word(1), count = word(3)
            guard (1...ModbusLimits.maxReadRegisters).contains(count) else { return ex(.illegalDataValue) }
            guard Int(start) + Int(count) <= 0x10000 else { return ex(.illegalDataAddress) }
            for block in snapshotBlocks where block.contains(start) && block.contains(start + count - 1) {
                return .readSnapshot(unit: unit, start: start, count: count)
            }
            return .forward(.readHoldingRegisters(unit: unit, start: start, count: count))
        case .readCoils:
            guard pdu.count == 5 else { return ex(.illegalDataValue) }
            let start = word(1), count = word(3)
            guard (1...ModbusLimits.maxReadCoils).contains(count) else { return ex(.illegalDataValue) }
            guard Int(start) + Int(count) <= 0x10000 else { return ex(.illegalDataAddress) }
            return .forward(.readCoils(unit: unit, start: start, count: count))
        case .writeSingleCoil:
            guard pdu.count == 5 else { return ex(.illegalDataValue) }
            let value = word(3)
            guard value == 0xFF00 || value == 0x0000 else { return ex(.illegalDataValue) }
            guard mayWrite else { return ex(.illegalFunction) }
            return .forward(ModbusRequest(unit: unit, function: .writeSingleCoil, start: word(1), value: value))
        case .writeMultipleRegisters:
            guard pdu.count >= 6 else { return ex(.illegalDataValue) }
            let start = word(1), count = word(3), byteCount = Int(pdu[5])
            guard (1...ModbusLimits.maxWriteRegisters).contains(count), byteCount == 2 * Int(count),
                  pdu.count == 6 + byteCount else { return ex(.illegalDataValue) }
            guard Int(start) + Int(count) <= 0x10000 else { return ex(.illegalDataAddress) }
            guard mayWrite else { return ex(.illegalFunction) }
            let values = (0..<Int(count)).map { word(6 + 2 * $0) }
            return .forward(.writeMultipleRegisters(unit: unit, start: start, values: values))
        }
    }

    /// The TCP reply PDU for what the bus returned for a forwarded request with function `fc`.
    public static func replyPDU(_ outcome: ForwardOutcome, function fc: UInt8) -> [UInt8] {
        switch outcome {
        case .reply(let pdu): return pdu
        case .exception(let code): return MBAP.exception(fc, code)
        case .failed: return MBAP.exception(fc, ExceptionCode.gatewayTargetFailed.rawValue)
        }
    }
}

/// The snapshot's measurement and energy registers as the meter sends them: each float's IEEE-754 bits, high
/// word first, unchanged (NaN payloads, infinities, subnormals and -0 included).
public struct SnapshotRegisters: Sendable, Equatable {
    /// Big-endian register bytes per block in `ModbusTCPClassifier.snapshotBlocks` order; nil when not read yet.
    public var blocks: [[UInt8]?]

    public init(_ snapshot: MeterSnapshot) {
        blocks = ModbusTCPClassifier.snapshotBlocks.map { block in
            guard let floats = snapshot.floats(block.group), floats.count * 2 == Int(block.count) else { return nil }
            var bytes = [UInt8]()
            bytes.reserveCapacity(Int(block.count) * 2)
            for f in floats {
                let bits = f.bitPattern
                bytes.append(UInt8(bits >> 24)); bytes.append(UInt8((bits >> 16) & 0xFF))
                bytes.append(UInt8((bits >> 8) & 0xFF)); bytes.append(UInt8(bits & 0xFF))
            }
            return bytes
        }
    }

    /// The FC03 reply PDU for `count` registers from `start`, or nil when that block has not been read.
    public func readReply(start: UInt16, count: UInt16) -> [UInt8]? {
        for (i, block) in ModbusTCPClassifier.snapshotBlocks.enumerated()
        where block.contains(start) && block.contains(start + count - 1) {
            guard let bytes = blocks[i] else { return nil }
            let from = Int(start - block.start) * 2
            var pdu: [UInt8] = [FunctionCode.readHoldingRegisters.rawValue, UInt8(count * 2)]
            pdu.append(contentsOf: bytes[from..<(from + Int(count) * 2)])
            return pdu
        }
        return nil
    }

    /// Whether a snapshot may be served as current: the meter answered the latest cycle and that cycle is recent
    /// (`maxAgeSeconds` of wall time). Otherwise the TCP master gets 0x0B, never old values.
    public static func isCurrent(_ s: MeterSnapshot, now: Int64, maxAgeSeconds: Int64) -> Bool {
        s.health == .online && now - s.publishedAt <= maxAgeSeconds
    }
}

/// Write allow-list: IPv4/IPv6 addresses or prefixes (`192.168.1.20`, `10.0.0.0/8`, `fd00::/8`).
public struct ModbusTCPAllowList: Sendable, Equatable {
    struct Entry: Sendable, Equatable { var bytes: [UInt8]; var prefix: Int }
    private var entries: [Entry]

    public init(_ texts: [String]) throws(AllowListError) {
        entries = []
        for text in texts {
            let parts = text.split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count <= 2, let bytes = IPText.parse(String(parts[0])) else { throw AllowListError(text: text) }
            var prefix = bytes.count * 8
            if parts.count == 2 {
                guard let p = Int(parts[1]), (0...bytes.count * 8).contains(p) else { throw AllowListError(text: text) }
                prefix = p
            }
            entries.append(Entry(bytes: bytes, prefix: prefix))
        }
    }

    public var isEmpty: Bool { entries.isEmpty }

    /// Whether the peer at `ip` (textual, as NIO gives it) may write. IPv4-mapped IPv6 peers match IPv4 entries.
    public func permits(_ ip: String) -> Bool {
        guard var peer = IPText.parse(ip) else { return false }
        if peer.count == 16, peer[0..<10].allSatisfy({ $0 == 0 }), peer[10] == 0xFF, peer[11] == 0xFF {
            peer = Array(peer[12...])
        }
        return entries.contains { e in
            guard e.bytes.count == peer.count else { return false }
            var bits = e.prefix
            for i in 0..<peer.count where bits > 0 {
                let mask: UInt8 = bits >= 8 ? 0xFF : ~(0xFF >> UInt8(bits))
                if peer[i] & mask != e.bytes[i] & mask { return false }
                bits -= 8
            }
            return true
        }
    }
}

public struct AllowListError: Error, Sendable, CustomStringConvertible {
    public var text: String
    public var description: String { "'\(text)' is not an IPv4/IPv6 address or prefix (e.g. 192.168.1.20, 10.0.0.0/8, fd00::/8)" }
}
