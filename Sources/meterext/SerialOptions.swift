import ArgumentParser
import MeterHardware
import ModbusCore

extension LineSettings.Parity: ExpressibleByArgument {}

/// Serial-line flags shared by every command that talks to the meter. All optional, so `run` can tell a flag
/// given on the command line (which wins) from one left to the config file or board profile.
struct SerialOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Serial device of the RS485 adapter.", valueName: "path"))
    var serial: String?

    @Option(help: "Baud rate: 1200, 2400, 4800, 9600 or 19200 (meter default 9600).")
    var baud: Int?

    @Option(help: ArgumentHelp("Parity: even, odd or none (meter default even, i.e. 8E1). Pseudo-terminals (tests, simulator) need none.", valueName: "even|odd|none"))
    var parity: LineSettings.Parity?

    @Option(help: "Modbus address of the meter, 1–247 (meter default 1).")
    var address: UInt8?

    @Option(help: ArgumentHelp(
        "RS485 direction control: none (auto-direction transceiver or USB adapter), rts (modem-control line), kernel (TIOCSRS485), gpio:NAME or gpio:CHIP:OFFSET (DE pin through libgpiod, e.g. gpio:GPIO17).",
        valueName: "mode"))
    var direction: String?

    @Option(name: .customLong("timeout-ms"), help: "Response timeout in milliseconds (default 600).")
    var timeoutMs: Int?

    @Option(help: "Attempts per request before a transmission error counts (default 3).")
    var retries: Int?

    func validate() throws {
        if let baud, baud <= 0 { throw ValidationError("--baud must be positive") }
        if let address, address == 0 || address > 247 { throw ValidationError("--address must be 1–247") }
        if let timeoutMs, timeoutMs < 10 { throw ValidationError("--timeout-ms must be at least 10") }
        if let retries, retries < 1 { throw ValidationError("--retries must be at least 1") }
        if let direction { _ = try DirectionSetting(direction) }
    }
}

/// The link settings after flags, config file, board profile and defaults were merged.
struct LinkSettings {
    var serial: String
    var line: LineSettings
    var address: UInt8
    var direction: String
    var responseTimeoutMs: Int
    var retries: Int

    static let defaultSerial = "/dev/ttyAMA0"

    var description: String { "\(line), address \(address)" }
}

/// Validates a `--direction` value early, with the hardware layer's own parser.
struct DirectionSetting {
    init(_ text: String) throws {
        do {
            _ = try DirectionMode(parsing: text)
        } catch {
            throw ValidationError("--direction: \(error)")
        }
    }
}

extension SerialOptions {
    /// Flags over defaults (the meter's factory settings). `run` also merges the config file and board profile.
    func merged(over base: LinkSettings? = nil) -> LinkSettings {
        let b = base ?? LinkSettings(serial: LinkSettings.defaultSerial, line: .meterDefault, address: 1,
                                     direction: "none", responseTimeoutMs: 600, retries: 3)
        return LinkSettings(
            serial: serial ?? b.serial,
            line: LineSettings(baud: baud ?? b.line.baud, parity: parity ?? b.line.parity),
            address: address ?? b.address,
            direction: direction ?? b.direction,
            responseTimeoutMs: timeoutMs ?? b.responseTimeoutMs,
            retries: retries ?? b.retries)
    }
}
