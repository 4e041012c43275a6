/// A GPIO line as written in profiles and config: `NAME` (the line's name in the device tree, e.g. `GPIO17`) or
/// `CHIP:OFFSET` (e.g. `gpiochip0:17`). Names are preferred: the Pi 5's header chip is `gpiochip4` on older kernels
/// and `gpiochip0` on newer ones, while the line name `GPIO17` stays the same.
public enum LineSpec: Sendable, Hashable, CustomStringConvertible, Decodable {
    case named(String)
    case chipOffset(chip: String, offset: UInt32)

    public init(parsing text: String) throws(LineSpecError) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        switch parts.count {
        case 1 where !text.isEmpty && !text.contains(where: \.isWhitespace):
            self = .named(text)
        case 2 where !parts[0].isEmpty:
            guard let offset = UInt32(parts[1]) else { throw LineSpecError(text: text) }
            self = .chipOffset(chip: String(parts[0]), offset: offset)
        default:
            throw LineSpecError(text: text)
        }
    }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        do { self = try LineSpec(parsing: text) } catch {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: error.description))
        }
    }

    public var description: String {
        switch self {
        case .named(let name): name
        case .chipOffset(let chip, let offset): "\(chip):\(offset)"
        }
    }
}

public struct LineSpecError: Error, CustomStringConvertible, Equatable {
    public let text: String
    public var description: String { "invalid GPIO line '\(text)' (expected NAME such as GPIO17, or CHIP:OFFSET such as gpiochip0:17)" }
}

/// Who drives the RS485 transceiver's driver-enable (DE) input.
public enum DirectionSpec: Sendable, Hashable, CustomStringConvertible, Decodable {
    /// The transceiver switches by itself (USB adapters, auto-direction HATs).
    case none
    /// Userspace toggles the UART's RTS modem line around each frame.
    case rts
    /// The kernel's RS485 mode (TIOCSRS485) drives RTS as DE; set up by the overlay or at open.
    case kernel
    /// Userspace drives a GPIO line.
    case gpio(LineSpec)

    public init(parsing text: String) throws(DirectionSpecError) {
        switch text {
        case "none": self = .none
        case "rts": self = .rts
        case "kernel": self = .kernel
        default:
            guard text.hasPrefix("gpio:") else { throw DirectionSpecError(text: text, reason: nil) }
            do { self = .gpio(try LineSpec(parsing: String(text.dropFirst(5)))) } catch {
                throw DirectionSpecError(text: text, reason: error.description)
            }
        }
    }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        do { self = try DirectionSpec(parsing: text) } catch {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: error.description))
        }
    }

    public var description: String {
        switch self {
        case .none: "none"
        case .rts: "rts"
        case .kernel: "kernel"
        case .gpio(let line): "gpio:\(line)"
        }
    }
}

public struct DirectionSpecError: Error, CustomStringConvertible, Equatable {
    public let text: String
    public let reason: String?
    public var description: String {
        "invalid direction '\(text)' (expected none, rts, kernel, gpio:NAME or gpio:CHIP:OFFSET)"
            + (reason.map { ": \($0)" } ?? "")
    }
}
