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
            Tries address 1 at every baud rate and format the KPM33B offers first, then the factory setting \
            (9600 8E1) at every address, then the other rates in 8E1, then 8O1 and 8N1. Each probe waits only as \
            long as the line needs (the reply's time on the wire + t3.5 + --latency-ms). Shows progress with the \
            time left, notes settings where bytes arrive but never form a reply (a parity or baud mismatch), and \
            stops at the first meter found. Faster still: read the address (Ad) and baud (bd) off the meter's \
            display. Stop the service first: only one master may use the bus. Settings the port cannot do (parity \
            on a pseudo-terminal) are skipped with a note.
            """)

    @Option(help: ArgumentHelp("Serial device of the RS485 adapter.", valueName: "path"))
    var serial: String = LinkSettings.defaultSerial

    @Option(help: ArgumentHelp("RS485 direction control (see `meterext run --help`).", valueName: "mode"),
            transform: OptionValue.direction)
    var direction: DirectionMode = .none

    @Option(help: "Addresses to try, as FIRST-LAST (default 1-247).")
    var addresses: String = "1-247"

    @Option(name: .customLong("latency-ms"),
            help: "Margin for the meter and adapter to answer, beyond t3.5 and the reply's wire time (default 15).")
    var latencyMs: Int = 15

    /// A reply that came late shows up as noise in the next probe; the suspects are asked again this patiently.
    private static let patientTimeoutMs = 600
    private static let patientNanos = UInt64(patientTimeoutMs) * 1_000_000

    func run() throws {
        let range = try parseRange(addresses)
        guard (1...1000).contains(latencyMs) else { throw ValidationError("--latency-ms must be 1-1000") }
        var plan = ScanPlan(addresses: range, latencyMarginNanos: UInt64(latencyMs) * 1_000_000)
        plan.lines = plan.lines.filter { line in
            do {
                try MeterConnection(settings(line, address: range.lowerBound, timeoutMs: 1)).port.close()
                return true
            } catch {
                printError("skipping \(line): \(error)")
                return false
            }
        }
        guard !plan.lines.isEmpty else {
            printError("the port cannot be opened with any setting the meter offers")
            throw ExitStatus.serialPort.exit
        }
        let probes = plan.probes
        var left = probes.reduce(UInt64(0)) { $0 + plan.probeNanos($1.line) }
        var minimum: UInt64 = 0
        let started = MonotonicClock.nowNanos()
        var noisy: Set<String> = []
        var open: (line: LineSettings, connection: MeterConnection)?
        defer { open?.connection.port.close() }
        /// Probes of the current line sent within the patient timeout: the suspects when a late reply shows up.
        var recent: [(probe: ScanPlan.Probe, sentAt: UInt64)] = []

        func connection(for line: LineSettings, address: UInt8) throws -> MeterConnection {
            if let open, open.line == line { return open.connection }
            open?.connection.port.close()
            let timeoutMs = max(1, Int((plan.responseTimeoutNanos(line) + 999_999) / 1_000_000))
            let c = try MeterConnection(settings(line, address: address, timeoutMs: timeoutMs))
            // Silent addresses back to back: no extra quiet time after each; a late reply is caught below.
            c.master.quietAfterFailureNanos = 0
            c.master.configuration.interByteTimeoutNanos = plan.interByteTimeoutNanos
            open = (line, c)
            return c
        }
        func found(_ probe: ScanPlan.Probe) {
            progress("\n")
            print("found a meter at address \(probe.address), \(probe.line)")
            var flags = "--baud \(probe.line.baud) --parity \(probe.line.parity.rawValue) --address \(probe.address)"
            if serial != LinkSettings.defaultSerial { flags = "--serial \(serial) " + flags }
            print("use: meterext run \(flags)")
        }

        for (index, probe) in probes.enumerated() {
            progress("\r[\(index * 100 / probes.count)%] address \(probe.address) at \(probe.line), "
                + "at most \(duration(left)) left      ")
            left -= plan.probeNanos(probe.line)
            minimum += ScanPlan.physicalMinimumNanos(probe.line)
            guard let master = try? connection(for: probe.line, address: probe.address).master else { continue }
            let discardedBefore = master.port.discardedBytes
            let sentAt = MonotonicClock.nowNanos()
            let result = master.execute(.readHoldingRegisters(unit: probe.address, start: KPM33BMap.basic.start, count: 2))
            var late = master.port.discardedBytes != discardedBefore
            switch result {
            case .success, .failure(.transaction(.exception)):
                found(probe)
                summary(probes: index + 1, started: started, minimum: minimum)
                return
            case .failure(.transaction(.crcMismatch)), .failure(.transaction(.malformed)),
                 .failure(.transaction(.wrongSlave)):
                noisy.insert(probe.line.description)
                late = true
            default:
                break
            }
            recent = recent.filter { $0.probe.line == probe.line && sentAt - $0.sentAt < Self.patientNanos }
            recent.append((probe, sentAt))
            guard late else { continue }
            // Bytes that were no reply to this probe: perhaps an earlier address answered later than the margin
            // allows. Ask the recent ones again, patiently, oldest first.
            let suspects = recent.suffix(16).map(\.probe)
            recent = []
            open?.connection.port.close()
            open = nil
            for suspect in suspects {
                guard let patient = try? MeterConnection(
                    settings(suspect.line, address: suspect.address, timeoutMs: Self.patientTimeoutMs)) else { continue }
                defer { patient.port.close() }
                switch patient.master.execute(
                    .readHoldingRegisters(unit: suspect.address, start: KPM33BMap.basic.start, count: 2)) {
                case .success, .failure(.transaction(.exception)):
                    found(suspect)
                    print("note: the meter answers later than --latency-ms \(latencyMs) allows; "
                        + "scans of this bus need a larger --latency-ms")
                    summary(probes: index + 1, started: started, minimum: minimum)
                    return
                default:
                    break
                }
            }
        }
        progress("\n")
        summary(probes: probes.count, started: started, minimum: minimum)
        printError("no meter answered on \(serial) at addresses \(range.lowerBound)–\(range.upperBound).")
        if !noisy.isEmpty {
            printError("bytes arrived but never formed a reply at: \(noisy.sorted().joined(separator: ", ")) — "
                + "check A/B polarity and the meter's parity setting")
        } else {
            printError("nothing arrived at all: check the wiring (A/B, ground, power) and the direction setting")
        }
        throw ExitStatus.noReply.exit
    }

    private func settings(_ line: LineSettings, address: UInt8, timeoutMs: Int) -> LinkSettings {
        LinkSettings(serial: serial, line: line, address: address, direction: direction,
                     responseTimeoutMs: timeoutMs, retries: 1)
    }

    /// One line the bench reads: probes, time taken, and the physical minimum (request + reply on the wire and a
    /// t3.5 gap after each) for the same probes.
    private func summary(probes: Int, started: UInt64, minimum: UInt64) {
        let took = MonotonicClock.nowNanos() - started
        let ratio = minimum == 0 ? 0 : Double(took) / Double(minimum)
        printError("scan: \(probes) probes in \(seconds(took)) s, physical minimum \(seconds(minimum)) s "
            + "(\(seconds(UInt64(ratio * 1e9)))x)")
    }

    private func seconds(_ nanos: UInt64) -> String {
        let ms = (nanos + 500_000) / 1_000_000
        let fraction = String(ms % 1000)
        return "\(ms / 1000)." + String(repeating: "0", count: 3 - fraction.count) + fraction
    }

    private func duration(_ nanos: UInt64) -> String {
        let s = Int((nanos + 999_999_999) / 1_000_000_000)
        return s >= 60 ? "\(s / 60) min \(s % 60) s" : "\(s) s"
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
