import Platform
import Glibc

/// Switches an RS485 transceiver between driving the bus (DE asserted) and listening.
///
/// `RS485Port` calls `beginTransmit()` before the first byte of a frame and `endTransmit()` once the last stop bit
/// has left the UART. Implementations must be cheap and must not allocate: both run once per frame.
public protocol DirectionControl: AnyObject {
    func beginTransmit() throws(SystemError)
    func endTransmit() throws(SystemError)
    var description: String { get }
    /// Whether `RS485Port` must hold DE until the last stop bit is out before calling `endTransmit()`.
    /// False when the hardware or the kernel turns the bus around by itself (`none`, `kernel`).
    var needsEndOfFrameWait: Bool { get }
}

extension DirectionControl {
    public var needsEndOfFrameWait: Bool { true }
}

/// How the RS485 driver-enable (DE/RE) line is controlled; parsed from `--direction`.
public enum DirectionMode: Equatable, Hashable, Sendable, CustomStringConvertible {
    /// The transceiver switches by itself (auto-direction boards, most USB-RS485 adapters).
    case none
    /// The UART's RTS line drives DE: asserted while sending.
    case rts
    /// The UART driver drives RTS as DE itself (TIOCSRS485, RTS on send); nothing to do per frame.
    case kernel
    /// A GPIO line drives DE: high while sending, low (receive) otherwise.
    case gpio(GPIOLineSpec)

    public struct ParseError: Error, CustomStringConvertible, Equatable, Sendable {
        public var input: String
        public var reason: String
        public var description: String {
            "invalid direction control \"\(input)\": \(reason); expected none, rts, kernel, gpio:NAME "
                + "(e.g. gpio:GPIO17) or gpio:CHIP:OFFSET (e.g. gpio:gpiochip0:17)"
        }
    }

    /// Parses `none`, `rts`, `kernel`, `gpio:NAME`, `gpio:CHIP:OFFSET` (`gpio:gpiochip0:17`,
    /// `gpio:/dev/gpiochip4:17`, `gpio:0:17`). Keywords are case-insensitive; line and chip names are not.
    public init(parsing text: String) throws {
        let trimmed = trimmingWhitespace(text)
        let fail = { (reason: String) in ParseError(input: text, reason: reason) }
        switch trimmed.lowercased() {
        case "none": self = .none; return
        case "rts": self = .rts; return
        case "kernel": self = .kernel; return
        default: break
        }
        guard trimmed.lowercased().hasPrefix("gpio:") else {
            throw fail(trimmed.isEmpty ? "it is empty" : "unknown mode")
        }
        let rest = trimmed.dropFirst("gpio:".count)
        guard !rest.isEmpty else { throw fail("gpio: needs a line name or CHIP:OFFSET") }
        // The line part has exactly the syntax of a profile's status_led: one parser for both.
        do { self = .gpio(try GPIOLineSpec(parsing: rest, hintPrefix: "gpio:")) } catch { throw fail(error.reason) }
    }

    /// The form `init(parsing:)` accepts: `none`, `rts`, `kernel`, `gpio:GPIO17`, `gpio:gpiochip0:17`.
    public var description: String {
        switch self {
        case .none: return "none"
        case .rts: return "rts"
        case .kernel: return "kernel"
        case .gpio(let spec): return "gpio:\(spec)"
        }
    }

    /// Sets the direction control up on `port`, leaving the transceiver in receive: RTS deasserted, kernel RS485
    /// mode enabled, or the GPIO line requested as an output at 0. Fails here, at start, with a message naming
    /// the port or line, rather than on the first frame.
    public func makeControl(for port: SerialPort, consumer: String = "meterext") throws(SystemError)
        -> DirectionControl
    {
        switch self {
        case .none:
            return NoDirectionControl()
        case .rts:
            return try RTSDirectionControl(port: port)
        case .kernel:
            return try KernelRS485DirectionControl(port: port)
        case .gpio(let spec):
            return GPIODirectionControl(line: try GPIOOutputLine(spec, initialValue: false, consumer: consumer))
        }
    }
}

/// Auto-direction transceiver or USB adapter: nothing to switch.
public final class NoDirectionControl: DirectionControl {
    public init() {}
    public func beginTransmit() throws(SystemError) {}
    public func endTransmit() throws(SystemError) {}
    public var description: String { "none (auto-direction transceiver)" }
    public var needsEndOfFrameWait: Bool { false }
}

/// DE on the RTS modem-control line, switched with TIOCMBIS/TIOCMBIC around each frame.
public final class RTSDirectionControl: DirectionControl {
    private let port: SerialPort

    public init(port: SerialPort) throws(SystemError) {
        self.port = port
        // The driver's own RS485 mode (enabled at boot by some device trees) would toggle RTS too.
        try port.disableKernelRS485()
        try port.setRTS(false)
    }

    public func beginTransmit() throws(SystemError) { try port.setRTS(true) }
    public func endTransmit() throws(SystemError) { try port.setRTS(false) }
    public var description: String { "rts on \(port.path)" }
}

/// DE handled by the UART driver (TIOCSRS485, RTS high while sending, no extra delays): per frame, nothing.
public final class KernelRS485DirectionControl: DirectionControl {
    public let applied: SerialPort.KernelRS485
    private let path: String

    public init(port: SerialPort) throws(SystemError) {
        applied = try port.enableKernelRS485(rtsOnSend: true, delayBeforeSendMs: 0, delayAfterSendMs: 0)
        path = port.path
    }

    public func beginTransmit() throws(SystemError) {}
    public func endTransmit() throws(SystemError) {}
    public var description: String { "kernel RS485 on \(path)" }
    public var needsEndOfFrameWait: Bool { false }
}

/// DE on a GPIO line: 1 while sending, 0 (receive) otherwise.
public final class GPIODirectionControl: DirectionControl {
    public let line: GPIOOutputLine

    public init(line: GPIOOutputLine) {
        self.line = line
    }

    deinit {
        // Never leave the transceiver driving the bus.
        try? line.set(false)
    }

    public func beginTransmit() throws(SystemError) { try line.set(true) }
    public func endTransmit() throws(SystemError) { try line.set(false) }
    public var description: String { "gpio \(line.spec) (\(line.chipPath) offset \(line.offset))" }
}
