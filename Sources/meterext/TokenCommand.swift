import Platform
import ArgumentParser
import BoardSupport
import DeviceState
import FoundationEssentials
import Glibc
import MeterService
import NIOCore

struct TokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token",
        abstract: "Print the API token, or turn the token requirement on or off.",
        discussion: """
            Commands that change the board (relay_set, wifi_config, firmware_update, …) need \
            `Authorization: Bearer <token>` unless they come from the board itself or the open set-up access point. \
            `--require off` turns that off for strict MeterExtension #1 compatibility (anyone on the network can then \
            change the board).
            While the service runs, a change is sent to it (on this board, with the token) and the service restarts \
            to apply it; otherwise the configuration file is changed in place, keeping its owner and mode. Printing \
            the token never writes anything.
            """)

    @OptionGroup var state: StateDirectoryOptions
    var stateDir: String { state.path }

    @Option(help: ArgumentHelp("Require the token for commands that change the board.", valueName: "on|off"))
    var require: String?

    @Option(help: ArgumentHelp("Where the running service answers (default: from <state-dir>/service.lock).",
                               valueName: "host:port"), transform: OptionValue.address)
    var api: ListenAddress?

    func validate() throws {
        if let require, require != "on" && require != "off" { throw ValidationError("--require takes on or off") }
    }

    func run() async throws {
        if let require {
            if let service = ServiceLock.running(directory: stateDir) {
                let endpoint = try ServiceEndpoint.resolve(api, service)
                let token = try? StateStore.readConfig(directory: stateDir)?.apiToken.revealed
                let body = #"{"cmd":"token_require","require":"\#(require)"}"#
                let reply: [UInt8]
                do {
                    reply = try await LocalAPIClient(endpoint: endpoint, bearerToken: token).post(body)
                } catch {
                    printError("the meterext service runs (pid \(service.pid)) but cannot be reached at \(endpoint): "
                               + "\(error); nothing was changed")
                    throw ExitStatus.serviceUnreachable.exit
                }
                let fields = (try? JSONDecoder().decode([String: String].self, from: Data(reply))) ?? [:]
                guard fields["result"] == "OK" else {
                    printError("the service refused: \(fields["error"] ?? "?"): \(fields["message"] ?? String(decoding: reply, as: UTF8.self))")
                    throw ExitStatus.failed.exit
                }
                printError("sent to the running service (pid \(service.pid)); it restarts to apply the change")
            } else {
                let store = try StateStore(directory: stateDir)
                try store.updateConfig { $0.tokenRequired = require == "on" }
            }
        }
        let config: DeviceConfig
        if let stored = try StateStore.readConfig(directory: stateDir) {
            config = stored
        } else if ServiceLock.running(directory: stateDir) == nil {
            config = try StateStore(directory: stateDir).config // first use: creates the files (owned as the directory)
        } else {
            printError("the service is starting and has not written its configuration yet; try again")
            throw ExitStatus.serviceUnreachable.exit
        }
        print(config.apiToken.revealed)
        let required = require.map { $0 == "on" } ?? config.tokenRequired
        printError("token required: \(required ? "yes" : "no (anyone on the network can change this board)")")
    }
}

/// Where the CLI reaches the running service.
enum ServiceEndpoint {
    static func resolve(_ explicit: ListenAddress?, _ service: ServiceLock.Info) throws -> ListenAddress {
        if let explicit { return explicit }
        guard let host = service.host, let port = service.port else {
            printError("the meterext service (pid \(service.pid)) is starting; try again in a few seconds")
            throw ExitStatus.serviceUnreachable.exit
        }
        return ListenAddress(host: host, port: port)
    }

    /// `--api` if given, else the running service's address from the lock file, else the packaged default.
    static func forCommand(_ explicit: ListenAddress?, stateDir: String) -> ListenAddress {
        if let explicit { return explicit }
        if let service = ServiceLock.running(directory: stateDir), let host = service.host, let port = service.port {
            return ListenAddress(host: host, port: port)
        }
        return ListenAddress(host: "127.0.0.1", port: 80)
    }
}

/// `token_require` on /api: the service changes its own configuration file (no second writer) and restarts to
/// apply it. Protected like every command that changes the board.
struct TokenAPI: Sendable {
    static let protectedCommands: Set<String> = ["token_require"]
    let store: StateStore
    let restart: ProcessRestart
    let log: Logger

    struct Params: Decodable { var require: String }

    func register(into registry: inout CommandRegistry) {
        let api = self
        registry.register("token_require", sync: { request in api.handle(request) })
    }

    func handle(_ request: CommandRequest) -> CommandResult {
        let wanted: Bool
        switch request.parameters(Params.self) {
        case .success(let p) where p.require == "on": wanted = true
        case .success(let p) where p.require == "off": wanted = false
        case .success: return .error(.invalidParameter, "field 'require' must be \"on\" or \"off\"")
        case .failure(let e): return .error(.invalidParameter, e.message)
        }
        let changed: Bool
        do {
            changed = try store.updateConfig { c in
                let was = c.tokenRequired
                c.tokenRequired = wanted
                return was != wanted
            }
        } catch {
            return .error(.storageFailed, "the setting could not be stored")
        }
        log.info("API token requirement set to \(wanted ? "on" : "off")\(changed ? "; restarting to apply it" : "")")
        let reply = ["result": "OK", "token_required": wanted ? "yes" : "no", "restart": changed ? "yes" : "no"]
        guard changed else { return .ok(reply) }
        let restart = self.restart
        return .ok(reply, afterReply: { restart.restartService() })
    }

    /// The lock file's record: the bound port, on loopback when the service listens on every address.
    static func lockInfo(bound: SocketAddress) -> ServiceLock.Info {
        var host = bound.ipAddress ?? "127.0.0.1"
        if host == "0.0.0.0" { host = "127.0.0.1" }
        if host == "::" { host = "::1" }
        var info = ServiceLock.Info(pid: getpid())
        info.host = host
        info.port = bound.port
        return info
    }
}
