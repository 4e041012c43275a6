import CGPIOD
import Glibc
import Platform

/// The set-up button's GPIO line through libgpiod: input, pulled up (the button shorts it to ground), edge events on
/// both edges, kernel debounce where libgpiod 2.x offers it (the caller debounces as well: libgpiod 1.x has none).
/// Requested once, up front; a missing, busy or forbidden line fails with a message naming it.
public final class GPIOButtonLine: @unchecked Sendable {
    public enum Edge: Sendable, Equatable { case pressed, released }

    public let spec: GPIOLineSpec
    public let chipPath: String
    public let offset: UInt32
    // Only the one thread that waits for edges touches the handle after init (and deinit).
    private var handle: OpaquePointer?

    public init(_ spec: GPIOLineSpec, debounceMicroseconds: UInt32 = 20_000, consumer: String = "meterext-button")
        throws(SystemError)
    {
        let handle = try requestGPIOLine(spec) { chip, name, offset, handle, error, errorCount in
            meterext_gpio_open_button(chip, name, offset, debounceMicroseconds, consumer, &handle, error, errorCount)
        }
        self.spec = spec
        self.handle = handle
        self.chipPath = String(cString: meterext_gpio_chip_path(handle))
        self.offset = meterext_gpio_offset(handle)
    }

    deinit {
        if let handle { meterext_gpio_close(handle) }
    }

    /// The next edge within `timeoutMs`, or nil on timeout.
    public func waitEdge(timeoutMs: Int32) throws(SystemError) -> Edge? {
        let handle = handle
        let r = try retryingInterrupts("wait for GPIO edge", path: spec.description) {
            meterext_gpio_wait_edge(handle, timeoutMs)
        }
        switch r {
        case 1: return .pressed
        case 2: return .released
        default: return nil
        }
    }
}
