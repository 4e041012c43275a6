// Shared by every fuzz target: a reader over the fuzzer's bytes, a strict JSON checker and the failure hook.
// Compiled into each fuzzer executable next to its target file (see Tests/fuzz/build.sh).
#if canImport(Glibc)
import Glibc
#endif

/// A broken invariant. Prints what broke and aborts, so libFuzzer records the input as a crash artifact.
func fuzzFail(_ message: @autoclosure () -> String, file: StaticString = #fileID, line: UInt = #line) -> Never {
    fputs("FUZZ INVARIANT BROKEN (\(file):\(line)): \(message())\n", stderr)
    abort()
}

@inline(__always)
func fuzzCheck(_ condition: Bool, _ message: @autoclosure () -> String, file: StaticString = #fileID,
               line: UInt = #line) {
    if !condition { fuzzFail(message(), file: file, line: line) }
}

/// Takes structured values off the front of the fuzzer's input; returns zeros once it runs out, so every input
/// (including the empty one) is a valid program.
struct FuzzReader {
    let bytes: UnsafeRawBufferPointer
    private(set) var offset = 0

    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    var remaining: Int { bytes.count - offset }
    var isEmpty: Bool { remaining == 0 }

    mutating func byte() -> UInt8 {
        guard offset < bytes.count else { return 0 }
        defer { offset += 1 }
        return bytes[offset]
    }

    mutating func u16() -> UInt16 { UInt16(byte()) << 8 | UInt16(byte()) }
    mutating func u32() -> UInt32 { UInt32(u16()) << 16 | UInt32(u16()) }

    mutating func bool() -> Bool { byte() & 1 == 1 }

    mutating func take(_ n: Int) -> UnsafeRawBufferPointer {
        let n = max(0, min(n, remaining))
        defer { offset += n }
        return UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + n)])
    }

    mutating func rest() -> UnsafeRawBufferPointer { take(remaining) }
}

/// RFC 8259 JSON text checker, independent of the JSON coders under test: true when `bytes` is exactly one JSON
/// value with optional surrounding whitespace. Strings must be valid UTF-8 without raw control characters.
struct StrictJSON {
    private let b: [UInt8]
    private var i = 0
    private var depth = 0

    static func isValid(_ bytes: [UInt8]) -> Bool {
        var p = StrictJSON(b: bytes)
        p.ws()
        guard p.value() else { return false }
        p.ws()
        return p.i == bytes.count
    }

    /// True when `bytes` is one JSON object (what every /api reply must be).
    static func isObject(_ bytes: [UInt8]) -> Bool {
        guard isValid(bytes) else { return false }
        return bytes.first(where: { !Self.isWS($0) }) == UInt8(ascii: "{")
    }

    private init(b: [UInt8]) { self.b = b }

    private static func isWS(_ c: UInt8) -> Bool { c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D }
    private var cur: UInt8? { i < b.count ? b[i] : nil }

    private mutating func ws() { while let c = cur, Self.isWS(c) { i += 1 } }

    private mutating func lit(_ s: StaticString) -> Bool {
        let n = s.utf8CodeUnitCount
        guard i + n <= b.count else { return false }
        for k in 0..<n where b[i + k] != s.utf8Start[k] { return false }
        i += n
        return true
    }

    private mutating func value() -> Bool {
        guard let c = cur else { return false }
        switch c {
        case UInt8(ascii: "{"): return object()
        case UInt8(ascii: "["): return array()
        case UInt8(ascii: "\""): return string()
        case UInt8(ascii: "t"): return lit("true")
        case UInt8(ascii: "f"): return lit("false")
        case UInt8(ascii: "n"): return lit("null")
        default: return number()
        }
    }

    private mutating func object() -> Bool {
        depth += 1
        defer { depth -= 1 }
        guard depth < 512 else { return false }
        i += 1
        ws()
        if cur == UInt8(ascii: "}") { i += 1; return true }
        while true {
            ws()
            guard cur == UInt8(ascii: "\""), string() else { return false }
            ws()
            guard cur == UInt8(ascii: ":") else { return false }
            i += 1
            ws()
            guard value() else { return false }
            ws()
            if cur == UInt8(ascii: ",") { i += 1; continue }
            if cur == UInt8(ascii: "}") { i += 1; return true }
            return false
        }
    }

    private mutating func array() -> Bool {
        depth += 1
        defer { depth -= 1 }
        guard depth < 512 else { return false }
        i += 1
        ws()
        if cur == UInt8(ascii: "]") { i += 1; return true }
        while true {
            ws()
            guard value() else { return false }
            ws()
            if cur == UInt8(ascii: ",") { i += 1; continue }
            if cur == UInt8(ascii: "]") { i += 1; return true }
            return false
        }
    }

    private mutating func string() -> Bool {
        i += 1
        while let c = cur {
            switch c {
            case UInt8(ascii: "\""):
                i += 1
                return true
            case UInt8(ascii: "\\"):
                i += 1
                guard let e = cur else { return false }
                switch e {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"),
                     UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                    i += 1
                case UInt8(ascii: "u"):
                    i += 1
                    for _ in 0..<4 {
                        guard let h = cur, Self.isHex(h) else { return false }
                        i += 1
                    }
                default:
                    return false
                }
            case 0..<0x20:
                return false
            case 0x80...:
                guard utf8Sequence() else { return false }
            default:
                i += 1
            }
        }
        return false
    }

    private static func isHex(_ c: UInt8) -> Bool {
        (0x30...0x39).contains(c) || (0x41...0x46).contains(c) || (0x61...0x66).contains(c)
    }

    /// One well-formed UTF-8 sequence (no overlongs, no surrogates, at most U+10FFFF).
    private mutating func utf8Sequence() -> Bool {
        let c = b[i]
        let n: Int
        var lo: UInt8 = 0x80, hi: UInt8 = 0xBF
        switch c {
        case 0xC2...0xDF: n = 1
        case 0xE0: n = 2; lo = 0xA0
        case 0xE1...0xEC, 0xEE...0xEF: n = 2
        case 0xED: n = 2; hi = 0x9F
        case 0xF0: n = 3; lo = 0x90
        case 0xF1...0xF3: n = 3
        case 0xF4: n = 3; hi = 0x8F
        default: return false
        }
        guard i + n < b.count else { return false }
        for k in 1...n {
            let x = b[i + k]
            if k == 1 { guard x >= lo && x <= hi else { return false } } else { guard x >= 0x80 && x <= 0xBF else { return false } }
        }
        i += n + 1
        return true
    }

    private mutating func digits() -> Int {
        var n = 0
        while let c = cur, (0x30...0x39).contains(c) { i += 1; n += 1 }
        return n
    }

    private mutating func number() -> Bool {
        if cur == UInt8(ascii: "-") { i += 1 }
        guard let c = cur else { return false }
        if c == UInt8(ascii: "0") { i += 1 } else if (0x31...0x39).contains(c) { _ = digits() } else { return false }
        if cur == UInt8(ascii: ".") {
            i += 1
            guard digits() > 0 else { return false }
        }
        if cur == UInt8(ascii: "e") || cur == UInt8(ascii: "E") {
            i += 1
            if cur == UInt8(ascii: "+") || cur == UInt8(ascii: "-") { i += 1 }
            guard digits() > 0 else { return false }
        }
        return true
    }
}
