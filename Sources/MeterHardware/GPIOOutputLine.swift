import Platform
import CGPIOD
import Glibc

/// Which GPIO line: by name (portable: `GPIO17` is the same header pin on a Pi 4 and on a Pi 5, whose chip
/// numbers differ) or by chip and offset.
public enum GPIOLineSpec: Equatable, Hashable, Sendable, CustomStringConvertible {
    /// A line name as `gpioinfo` shows it, searched on every /dev/gpiochip*.
    case named(String)
    /// `gpiochip0`, `/dev/gpiochip4` or `0`, and the line offset on that chip.
    case chipOffset(chip: String, offset: UInt32)

    /// `GPIO17` or `gpiochip0:17`, the form `DirectionMode` parses after `gpio:`.
    public var description: String {
        switch self {
        case .named(let name): return name
        case .chipOffset(let chip, let offset): return "\(chip):\(offset)"
        }
    }
}

extension GPIOLineSpec {
    public struct ParseError: Error, CustomStringConvertible, Equatable, Sendable {
        public var input: String
        public var reason: String
        public var description: String {
            "invalid GPIO line \"\(input)\": \(reason); expected NAME (e.g. GPIO17) or CHIP:OFFSET (e.g. gpiochip0:17)"
        }
    }

    /// Parses `NAME` (`GPIO17`, `RS485_DE`) or `CHIP:OFFSET` (`gpiochip0:17`, `/dev/gpiochip4:17`, `0:17`), the forms
    /// `description` prints. Surrounding whitespace is ignored; names are case-sensitive. Board profiles, the run
    /// config file and `DirectionMode(parsing:)` (after `gpio:`) all go through this one parser.
    public init(parsing text: String) throws {
        do { self = try GPIOLineSpec(parsing: trimmingWhitespace(text), hintPrefix: "") } catch {
            throw ParseError(input: text, reason: error.reason)
        }
    }

    /// The parser proper, on already trimmed text. `hintPrefix` goes in front of the examples a reason suggests, so
    /// `DirectionMode` can say `gpio:GPIO17` where a bare line says `GPIO17`. The error's `input` is `text`.
    init(parsing text: Substring, hintPrefix: String) throws(ParseError) {
        let fail = { (reason: String) in ParseError(input: String(text), reason: reason) }
        guard !text.isEmpty else { throw fail("it is empty") }
        guard !text.contains(where: { $0.isWhitespace }) else {
            throw fail("a GPIO line or chip name has no spaces")
        }
        if let colon = text.lastIndex(of: ":") {
            let chip = String(text[..<colon])
            let offsetText = text[text.index(after: colon)...]
            guard !chip.isEmpty else { throw fail("the chip before \":\(offsetText)\" is missing") }
            guard !offsetText.isEmpty, offsetText.allSatisfy({ $0.isASCII && $0.isNumber }),
                let offset = UInt32(offsetText)
            else { throw fail("the line offset after \"\(chip):\" must be a number, got \"\(offsetText)\"") }
            self = .chipOffset(chip: chip, offset: offset)
        } else {
            guard !text.allSatisfy({ $0.isASCII && $0.isNumber }) else {
                throw fail(
                    "a bare number is ambiguous; give the line name (\(hintPrefix)GPIO\(text)) or the chip too "
                        + "(\(hintPrefix)gpiochip0:\(text))")
            }
            self = .named(String(text))
        }
    }
}

/// `text` without leading and trailing whitespace.
func trimmingWhitespace(_ text: String) -> Substring {
    var trimmed = Substring(text)
    while trimmed.first?.isWhitespace == true { trimmed.removeFirst() }
    while trimmed.last?.isWhitespace == true { trimmed.removeLast() }
    return trimmed
}

/// One GPIO line requested as an output through libgpiod, held until `close()` or deinit.
///
/// Requested once, up front, so a missing, busy or forbidden line fails at start with a message naming it instead
/// of on the first frame. `set` is one ioctl; it doesn't allocate.
public final class GPIOOutputLine {
    public let spec: GPIOLineSpec
    /// The chip device the line was found on (`/dev/gpiochip0`) and its offset there.
    public let chipPath: String
    public let offset: UInt32
    private var handle: OpaquePointer?

    /// Which libgpiod API the shim was built against ("libgpiod 1.x" / "libgpiod 2.x").
    public static var libraryAPI: String { String(cString: meterext_gpio_api()) }

    public init(_ spec: GPIOLineSpec, initialValue: Bool, consumer: String = "meterext") throws(SystemError) {
        let handle = try requestGPIOLine(spec) { chip, name, offset, handle, error, errorCount in
            meterext_gpio_open(chip, name, offset, initialValue ? 1 : 0, consumer, &handle, error, errorCount)
        }
        self.spec = spec
        self.handle = handle
        self.chipPath = String(cString: meterext_gpio_chip_path(handle))
        self.offset = meterext_gpio_offset(handle)
    }

    deinit {
        close()
    }

    /// Drives the line high (`true`) or low.
    @inline(__always)
    public func set(_ high: Bool) throws(SystemError) {
        let handle = handle
        guard handle != nil else {
            throw SystemError(operation: "set GPIO line", errno: EBADF, path: spec.description, detail: "line closed")
        }
        _ = try retryingInterrupts("set GPIO line", path: spec.description) {
            meterext_gpio_set(handle, high ? 1 : 0)
        }
    }

    /// Releases the line back to the kernel (it keeps its last value until someone else requests it).
    public func close() {
        guard let handle else { return }
        meterext_gpio_close(handle)
        self.handle = nil
    }
}

/// Requests `spec`'s line through one of the shim's open calls (`open(chip, name, offset, &handle, errorBuffer,
/// errorCount)`, the line given by chip and offset or by name) and turns a failure into a `SystemError` naming the
/// line, with libgpiod's own text as detail.
func requestGPIOLine(
    _ spec: GPIOLineSpec,
    _ open: (UnsafePointer<CChar>?, UnsafePointer<CChar>?, UInt32, inout OpaquePointer?, UnsafeMutablePointer<CChar>?,
             Int) -> Int32
) throws(SystemError) -> OpaquePointer {
    var errorText = [CChar](repeating: 0, count: 512)
    var handle: OpaquePointer?
    let result: Int32 = errorText.withUnsafeMutableBufferPointer { errorBuffer in
        switch spec {
        case .named(let name):
            return open(nil, name, 0, &handle, errorBuffer.baseAddress, errorBuffer.count)
        case .chipOffset(let chip, let offset):
            return open(chip, nil, offset, &handle, errorBuffer.baseAddress, errorBuffer.count)
        }
    }
    guard result == 0, let handle else {
        let code = Glibc.errno
        let text = errorText.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        throw SystemError(
            operation: "request GPIO line", errno: code == 0 ? EIO : code, path: spec.description,
            detail: text.isEmpty ? nil : text)
    }
    return handle
}
