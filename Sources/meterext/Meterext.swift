import ArgumentParser

@main
struct Meterext: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "meterext",
        abstract: "KPM33B meter gateway with the MeterExtension #1 REST API.",
        discussion: """
            Reads a Compere KPM33B three-phase meter over RS485 (Modbus RTU) and serves its values as a \
            MeterExtension #1 device: POST JSON commands to http://<board>/api.

            Installers: wire the RS485 pair, then `meterext scan` finds the meter's address, baud rate and parity, \
            and `meterext read` shows one reading (or says what is wrong). `meterext run` is the service.
            Without a meter: `meterext run --simulate` runs against the built-in KPM33B simulator.

            Exit status (every command):
            \(ExitStatus.table())
            """,
        version: BuildInfo.version,
        subcommands: [RunCommand.self, ReadCommand.self, ScanCommand.self, RelayCommand.self,
                      SimulateCommand.self, StatusCommand.self, StatusCodeCommand.self, WiFiCommand.self, TokenCommand.self, ImageCommand.self, NetCommand.self, BenchCommand.self,
                      FleetBenchCommand.self /* issue 16 */])
}

enum BuildInfo {
    static let version = "0.1.0"
    /// Issue 15: no interval is recorded while the wall clock is earlier than this (Unix seconds, 2026-11-30 UTC;
    /// move it forward with each release).
    static let buildDate: Int64 = 1_795_996_800
}
