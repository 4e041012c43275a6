import ArgumentParser
import FoundationEssentials
import Glibc
import KPM33B
import ModbusCore

struct ReadCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "read",
        abstract: "Read the meter once and print every value (installer check).",
        discussion: """
            Reads the basic measurements, relay, energy, demand, parameters and history once. When the meter does \
            not answer, says why in plain words and exits non-zero:
            \(ExitStatus.table([.noReply, .lineErrors, .refused, .garbled, .serialPort]))
            Stop the service first (`systemctl stop meterext`): only one master may use the bus.
            """)

    @OptionGroup var serial: SerialOptions

    @Flag(help: "Print JSON instead of a table (for scripts).")
    var json = false

    func run() throws {
        let settings = serial.merged()
        let connection = try MeterConnection.openForCommand(settings)
        connection.poller.runCycle()
        let snapshot = connection.poller.snapshot()
        guard snapshot.health == .online else {
            let error = snapshot.lastError
            printError("no reading from the meter at \(settings.serial) (\(settings.description)):")
            printError("  \(error?.message ?? "unknown error")")
            throw ExitStatus.forLinkError(error?.kind).exit
        }
        if json {
            print(try ReadingReport(snapshot, settings: settings).jsonText())
        } else {
            print(ReadingReport(snapshot, settings: settings).table())
        }
    }

}

/// One reading as installers and scripts see it.
struct ReadingReport: Encodable {
    struct Value: Encodable {
        var name: String
        var value: Float
        var unit: String
    }

    var serialNumber: String
    var line: String
    var relay: String
    var controlMode: String
    var loadThresholdKW: Int?
    var meterClock: String?
    var readAt: Int64
    var values: [Value]
    var history: [Value]

    init(_ s: MeterSnapshot, settings: LinkSettings) {
        serialNumber = s.serialNumber ?? ""
        line = settings.description
        relay = s.relay.map { $0.closed ? "closed (on)" : "open (off)" } ?? "unknown"
        controlMode = s.parameters?.controlMode.rawValue ?? "unknown"
        loadThresholdKW = s.parameters.map { Int($0.loadThresholdKW) }
        meterClock = s.parameters?.clock.text
        readAt = s.readTime(.basic) ?? 0
        values = (Register.allBasic + Register.allEnergy + Register.allDemand).compactMap { r in
            s.value(r).map { Value(name: r.name, value: $0, unit: r.unit.rawValue) }
        }
        history = Register.historyRuns.flatMap { run in
            (0..<HistoryRun.months).compactMap { m in
                let r = run.register(month: m)
                return s.value(r).map { Value(name: r.name, value: $0, unit: r.unit.rawValue) }
            }
        }
    }

    func jsonText() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }

    func table() -> String {
        var lines = [
            "KPM33B \(serialNumber)  (\(line))",
            "relay: \(relay), control mode: \(controlMode), load threshold: \(loadThresholdKW.map { "\($0) kW" } ?? "unknown")",
            "meter clock: \(meterClock ?? "unknown")",
            "",
        ]
        let width = values.map(\.name.count).max() ?? 0
        for v in values {
            lines.append(v.name.padding(width) + "  " + format(v.value).leftPadding(12) + " " + v.unit)
        }
        lines.append("")
        lines.append("monthly history (this month, previous 1…12): `meterext read --json` lists all \(history.count) values")
        return lines.joined(separator: "\n")
    }

    private func format(_ v: Float) -> String {
        let scaled = (Double(v) * 1000).rounded() / 1000
        return String(scaled)
    }
}

extension String {
    func padding(_ width: Int) -> String { count >= width ? self : self + String(repeating: " ", count: width - count) }
    func leftPadding(_ width: Int) -> String { count >= width ? self : String(repeating: " ", count: width - count) + self }
}

func printError(_ text: String) {
    fputs(text + "\n", stderr)
}
