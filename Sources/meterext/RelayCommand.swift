import ArgumentParser
import KPM33B
import MeterHardware
import ModbusCore

struct RelayCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "relay",
        abstract: "Switch the meter's load relay on or off, or show its state.",
        discussion: """
            on closes the relay (supply on), off opens it (supply off), status reads it. Talks to the meter \
            directly: stop the service first, or use the API's relay_set command while it runs.
            """)

    enum Action: String, ExpressibleByArgument, CaseIterable { case on, off, status }

    @Argument(help: "on, off or status")
    var action: Action

    @OptionGroup var serial: SerialOptions

    func run() throws {
        let settings = serial.merged()
        let connection = try MeterConnection.openForCommand(settings)
        let result: Result<RelayState, ModbusFailure>
        switch action {
        case .status:
            connection.poller.runCycle()
            let s = connection.poller.snapshot()
            if let relay = s.relay, s.health == .online {
                result = .success(relay)
            } else {
                printError(s.lastError?.message ?? "no reply")
                throw ExitStatus.forLinkError(s.lastError?.kind).exit
            }
        case .on, .off:
            result = connection.poller.performRelay(closed: action == .on)
        }
        switch result {
        case .success(let relay):
            let phases = relay.phases.map { p in
                [("A", p.a), ("B", p.b), ("C", p.c)].map { "\($0.0) \($0.1 ? "closed" : "open")" }.joined(separator: ", ")
            } ?? RelayState.phasesNotReported
            print("relay \(relay.closed ? "on (closed)" : "off (open)")  [\(phases)]")
        case .failure(let failure):
            printError(LinkDiagnosis.message(for: failure, unit: settings.address, line: settings.description))
            throw ExitStatus.forLinkError(LinkDiagnosis.kind(of: failure)).exit
        }
    }
}

