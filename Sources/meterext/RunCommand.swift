import ArgumentParser
import Glibc
import KPM33B
import MeterHardware
import ModbusCore

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the gateway: poll the meter and serve the MeterExtension API.",
        discussion: """
            Polls the KPM33B (basic values and relay every cycle, energy every few seconds, parameters and history \
            at start and hourly) and serves POST /api on --listen. Flags override the config file, which overrides \
            the board profile. With --simulate the built-in KPM33B simulator runs in-process on a pty pair, so the \
            real serial and Modbus code is exercised without a meter.
            """)

    @OptionGroup var serial: SerialOptions

    @Option(help: ArgumentHelp("Address and port of the API (board default 0.0.0.0:80).", valueName: "host:port"))
    var listen: String?

    @Option(name: .customLong("state-dir"), help: ArgumentHelp("Directory for configuration and state.", valueName: "dir"))
    var stateDir: String?

    @Option(help: ArgumentHelp("WiFi back end: networkmanager (nmcli) or sim.", valueName: "networkmanager|sim"))
    var wifi: String?

    @Option(help: ArgumentHelp("Config file (JSON, keys as the flags).", valueName: "file"))
    var config: String?

    @Flag(help: "Run against the built-in KPM33B simulator on a pty pair instead of a meter.")
    var simulate = false

    @Option(name: .customLong("poll-interval"), help: "Seconds between poll cycles (default 1).")
    var pollInterval: Double?

    func run() async throws {
        var settings = serial.merged()
        var simulator: InProcessSimulator?
        if simulate {
            let sim = try InProcessSimulator(unit: settings.address)
            try sim.start()
            simulator = sim
            settings.serial = sim.path
            settings.line.parity = .none
        }
        var plan = PollPlan()
        if let pollInterval { plan.cycleSeconds = pollInterval }
        let connection = try MeterConnection(settings, plan: plan)
        connection.poller.start()
        print("meterext: polling \(settings.serial) (\(settings.description))\(simulate ? " [simulator]" : "")")
        while true {
            try await Task.sleep(nanoseconds: 1_000_000_000)
        }
        _ = simulator
    }
}
