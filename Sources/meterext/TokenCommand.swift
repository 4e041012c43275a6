import ArgumentParser
import DeviceState

struct TokenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token",
        abstract: "Print the API token, or turn the token requirement on or off.",
        discussion: """
            Commands that change the board (relay_set, wifi_config, firmware_update, …) need \
            `Authorization: Bearer <token>` unless they come from the board itself or the open set-up access point. \
            `--require off` turns that off for strict MeterExtension #1 compatibility (anyone on the network can then \
            change the board). Restart the service after a change: sudo systemctl restart meterext
            """)

    @OptionGroup var state: StateDirectoryOptions
    var stateDir: String { state.path }

    @Option(help: ArgumentHelp("Require the token for commands that change the board.", valueName: "on|off"))
    var require: String?

    func run() throws {
        let store = try StateStore(directory: stateDir)
        switch require {
        case "on"?: try store.updateConfig { $0.tokenRequired = true }
        case "off"?: try store.updateConfig { $0.tokenRequired = false }
        case nil: break
        default: throw ValidationError("--require takes on or off")
        }
        print(store.config.apiToken.revealed)
        printError("token required: \(store.config.tokenRequired ? "yes" : "no (anyone on the network can change this board)")")
    }
}
