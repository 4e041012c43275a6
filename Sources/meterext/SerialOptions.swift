import ArgumentParser
import MeterHardware
import ModbusCore
import Platform

// Option values are parsed into their types here, once, by the layer that owns the type's grammar; commands never
// see the text. A bad value is a usage error (exit 64) naming the option.

extension LineSettings.Parity: ExpressibleByArgument {}

enum OptionValue {
    /// `--direction`: none, rts, kernel, gpio:NAME, gpio:CHIP:OFFSET (MeterHardware's grammar).
    static func direction(_ text: String) throws -> DirectionMode {
        do { return try DirectionMode(parsing: text) } catch { throw ValidationError("\(error)") }
    }

    /// `--listen` / `--api`: HOST:PORT or [IPv6]:PORT (Platform's grammar; port 0 lets the kernel pick).
    static func address(_ text: String) throws -> ListenAddress {
        do { return try ListenAddress(parsing: text, allowingAnyPort: true) } catch { throw ValidationError("\(error)") }
    }

    /// `--address`: one Modbus address or a comma-separated list of distinct ones (issue 17).
    static func addresses(_ text: String) throws -> [UInt8] {
        let parts = text.split(separator: ",", omittingEmptySubsequences: false)
        let list = parts.compactMap { UInt8(String($0.filter { $0 != " " })) }
        guard !list.isEmpty, list.count == parts.count, list.allSatisfy({ (1...247).contains($0) }) else {
            throw ValidationError("'\(text)' is not a Modbus address 1–247 or a comma-separated list of them")
        }
        guard Set(list).count == list.count else { throw ValidationError("'\(text)' names an address twice") }
        return list
    }

    /// `--baud`: a rate the serial layer can set.
    static func baud(_ text: String) throws -> Int {
        guard let baud = Int(text), SerialPort.supportedBaudRates.contains(baud) else {
            throw ValidationError("\(text) is not supported; use one of "
                + SerialPort.supportedBaudRates.map(String.init).joined(separator: ", ")
                + " (the KPM33B offers " + LineSettings.meterBaudRates.map(String.init).joined(separator: ", ") + ")")
        }
        return baud
    }
}

/// `--state-dir`, shared by every command that reads or writes the service's files.
struct StateDirectoryOptions: ParsableArguments {
    static let defaultPath = "/var/lib/meterext"

    @Option(name: .customLong("state-dir"),
            help: ArgumentHelp("The service's directory for configuration and state (default /var/lib/meterext).",
                               valueName: "dir"))
    var stateDir: String?

    /// The flag, or the packaged default.
    var path: String { stateDir ?? Self.defaultPath }
}

/// `--api`, shared by the commands that talk to the running service.
struct ServiceAPIOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Where the service listens.", valueName: "host:port"), transform: OptionValue.address)
    var api = ListenAddress(host: "127.0.0.1", port: 80)
}

/// Serial-line flags shared by every command that talks to the meter. All optional, so `run` can tell a flag
/// given on the command line (which wins) from one left to the config file or board profile.
struct SerialOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Serial device of the RS485 adapter.", valueName: "path"))
    var serial: String?

    @Option(help: "Baud rate: 1200, 2400, 4800, 9600 or 19200 (meter default 9600).", transform: OptionValue.baud)
    var baud: Int?

    @Option(help: ArgumentHelp("Parity: even, odd or none (meter default even, i.e. 8E1). Pseudo-terminals (tests, simulator) need none.", valueName: "even|odd|none"))
    var parity: LineSettings.Parity?

    @Option(help: ArgumentHelp("Modbus address of the meter, 1–247 (meter default 1); several meters on one bus as a list, e.g. 1,2,3 (run polls them all; other commands use the first).", valueName: "n[,n…]"),
            transform: OptionValue.addresses)
    var address: [UInt8]?

    @Option(help: ArgumentHelp(
        "RS485 direction control: none (auto-direction transceiver or USB adapter), rts (modem-control line), kernel (TIOCSRS485), gpio:NAME or gpio:CHIP:OFFSET (DE pin through libgpiod, e.g. gpio:GPIO17).",
        valueName: "mode"), transform: OptionValue.direction)
    var direction: DirectionMode?

    @Option(name: .customLong("timeout-ms"), help: "Response timeout in milliseconds (default 600).")
    var timeoutMs: Int?

    @Option(help: "Attempts per request before a transmission error counts (default 3).")
    var retries: Int?

    func validate() throws {
        if let address, address.contains(where: { $0 == 0 || $0 > 247 }) { throw ValidationError("--address must be 1–247") }
        if let timeoutMs, timeoutMs < 10 { throw ValidationError("--timeout-ms must be at least 10") }
        if let retries, retries < 1 { throw ValidationError("--retries must be at least 1") }
    }
}

/// The link settings after flags, config file, board profile and defaults were merged.
struct LinkSettings {
    var serial: String
    var line: LineSettings
    var address: UInt8
    var direction: DirectionMode
    var responseTimeoutMs: Int
    var retries: Int
    /// Issue 17: the other meters on the same bus, after `address`.
    var moreAddresses: [UInt8] = []

    static let defaultSerial = "/dev/ttyAMA0"

    /// Every meter on the bus, the first one first.
    var addresses: [UInt8] { [address] + moreAddresses }

    var description: String { description(address: address) }

    func description(address: UInt8) -> String { "\(line), address \(address)" }
}

extension SerialOptions {
    /// Flags over defaults (the meter's factory settings). `run` also merges the config file and board profile.
    func merged(over base: LinkSettings? = nil) -> LinkSettings {
        let b = base ?? LinkSettings(serial: LinkSettings.defaultSerial, line: .meterDefault, address: 1,
                                     direction: .none, responseTimeoutMs: 600, retries: 3)
        let list = address ?? b.addresses
        return LinkSettings(
            serial: serial ?? b.serial,
            line: LineSettings(baud: baud ?? b.line.baud, parity: parity ?? b.line.parity),
            address: list[0],
            direction: direction ?? b.direction,
            responseTimeoutMs: timeoutMs ?? b.responseTimeoutMs,
            retries: retries ?? b.retries,
            moreAddresses: Array(list.dropFirst()))
    }
}
