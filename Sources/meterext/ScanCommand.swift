import Platform
import ArgumentParser
import Glibc
import KPM33B
import MeterHardware
import ModbusCore

struct ScanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scan",
        abstract: "Find the meter's address, baud rate and parity, and print the flags to use.",
        discussion: """
            Tries address 1 (the factory setting) at every baud rate and format the KPM33B offers first, then every \
            address 2–247. Shows progress, notes settings where bytes arrive but never form a reply (a parity or \
            baud mismatch), and stops at the first meter found. Stop the service first: only one master may use the \
            bus. Settings the port cannot do (parity on a pseudo-terminal) are skipped with a note.
            """)

    @Option(help: ArgumentHelp("Serial device of the RS485 adapter.", valueName: "path"))
    var serial: String = LinkSettings.defaultSerial

    @Option(help: ArgumentHelp("RS485 direction control (see `meterext run --help`).", valueName: "mode"),
            transform: OptionValue.direction)
    var direction: DirectionMode = .none

    @Option(help: "Addresses to try, as FIRST-LAST (default 1-247).")
    var addresses: String = "1-247"

    @Option(name: .customLong("timeout-ms"), help: "How long to wait for each answer (default 150).")
    var timeoutMs: Int = 150

    func run() throws {
        let range = try parseRange(addresses)
        // The factory setting first, then faster rates first (they answer sooner), each with every format.
        var lines = [LineSettings.meterDefault]
        for baud in LineSettings.meterBaudRates.reversed() {
            for parity in [LineSettings.Parity.even, .odd, .none] {
                let line = LineSettings(baud: baud, parity: parity)
                if line != .meterDefault { lines.append(line) }
            }
        }
        var usable: [(LineSettings, MeterConnection)] = []
        for line in lines {
            let settings = LinkSettings(serial: serial, line: line, address: range.lowerBound, direction: direction,
                                        responseTimeoutMs: timeoutMs, retries: 1)
            do {
                usable.append((line, try MeterConnection(settings)))
                // One port at a time: the connection is reopened below for each try.
                usable[usable.count - 1].1.port.close()
            } catch {
                printError("skipping \(line): \(error)")
            }
        }
        guard !usable.isEmpty else {
            printError("the port cannot be opened with any setting the meter offers")
            throw ExitStatus.serialPort.exit
        }
        var order: [UInt8] = []
        if range.contains(1) { order.append(1) }
        order += range.filter { $0 != 1 }
        let total = order.count * usable.count
        var done = 0
        var noisy: Set<String> = []
        for address in order {
            for (line, _) in usable {
                done += 1
                progress("\r[\(done * 100 / total)%] address \(address) at \(line)      ")
                let settings = LinkSettings(serial: serial, line: line, address: address, direction: direction,
                                            responseTimeoutMs: timeoutMs, retries: 1)
                guard let connection = try? MeterConnection(settings) else { continue }
                defer { connection.port.close() }
                let result = connection.master.execute(
                    .readHoldingRegisters(unit: address, start: KPM33BMap.basic.start, count: 2))
                switch result {
                case .success, .failure(.transaction(.exception)):
                    progress("\n")
                    print("found a meter at address \(address), \(line)")
                    var flags = "--baud \(line.baud) --parity \(line.parity.rawValue) --address \(address)"
                    if serial != LinkSettings.defaultSerial { flags = "--serial \(serial) " + flags }
                    print("use: meterext run \(flags)")
                    return
                case .failure(.transaction(.crcMismatch)), .failure(.transaction(.malformed)),
                     .failure(.transaction(.wrongSlave)):
                    noisy.insert(line.description)
                default:
                    break
                }
            }
        }
        progress("\n")
        printError("no meter answered on \(serial) at addresses \(range.lowerBound)–\(range.upperBound).")
        if !noisy.isEmpty {
            printError("bytes arrived but never formed a reply at: \(noisy.sorted().joined(separator: ", ")) — "
                + "check A/B polarity and the meter's parity setting")
        } else {
            printError("nothing arrived at all: check the wiring (A/B, ground, power) and the direction setting")
        }
        throw ExitStatus.noReply.exit
    }

    private func parseRange(_ text: String) throws -> ClosedRange<UInt8> {
        let parts = text.split(separator: "-").map { UInt8($0) }
        if parts.count == 1, let a = parts[0], a >= 1, a <= 247 { return a...a }
        guard parts.count == 2, let a = parts[0], let b = parts[1], a >= 1, b <= 247, a <= b else {
            throw ValidationError("--addresses takes FIRST-LAST within 1-247, e.g. 1-247 or 5-10")
        }
        return a...b
    }

    private func progress(_ text: String) {
        fputs(text, stderr)
        fflush(stderr)
    }
}
