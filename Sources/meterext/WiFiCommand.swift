import Platform
import ArgumentParser
import DeviceState
import FoundationEssentials

/// `meterext wifi …`: the field-staff WiFi commands, sent to the running service's /api on this board.
struct WiFiCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wifi",
        abstract: "Show or change the board's WiFi (talks to the running service).",
        discussion: """
            status   the network the board is on, signal, address, and the set-up access point
            scan     visible networks with signal and security
            config   join a network: --ssid NAME [--password PW] [--mode sta|sta_ap]; the new network is tried \
            first, and the old one stays if it fails
            ap on    reopen the set-up access point (meterextension:XXXX) for its timeout
            ap off   close it now
            prepare-radio   (root, before the service starts) add uap0 when the radio can run access point and \
            client at once
            ap-password [--generate | --set PW]   show, generate or set the access point's per-device password \
            (printed for the board's label; kept across updates; a factory reset restores welinkwmlink)
            """,
        subcommands: [Status.self, Scan.self, Config.self, AccessPoint.self, APPassword.self, PrepareRadio.self])

    struct Target: ParsableArguments {
        @Option(help: ArgumentHelp("Where the service listens (default: from <state-dir>/service.lock, else 127.0.0.1:80).",
                                   valueName: "host:port"), transform: OptionValue.address)
        var api: ListenAddress?

        @OptionGroup var state: StateDirectoryOptions
        var stateDir: String { state.path }

        /// Changes go through the running service, never to its files: one writer. The token is read from the state
        /// directory when this user can (root), so the command also works when the service listens on a LAN
        /// address only.
        func send(_ fields: [String: String]) async throws -> [String: JSONScalar] {
            let body = try JSONEncoder().encode(fields)
            let api = ServiceEndpoint.forCommand(self.api, stateDir: stateDir)
            let token = try? StateStore.readConfig(directory: stateDir)?.apiToken.revealed
            let reply: [UInt8]
            do {
                reply = try await LocalAPIClient(endpoint: api, bearerToken: token)
                    .post(String(decoding: body, as: UTF8.self))
            } catch {
                printError("cannot reach the meterext service at \(api): \(error)")
                throw ExitStatus.serviceUnreachable.exit
            }
            let decoded = try JSONDecoder().decode([String: JSONScalar].self, from: Data(reply))
            if case .string("ERROR")? = decoded["result"] {
                printError("\(decoded["error"]?.text ?? "error"): \(decoded["message"]?.text ?? "")")
                throw ExitStatus.failed.exit
            }
            return decoded
        }
    }

    /// One value of a flat JSON reply (strings, numbers, or nested values shown as JSON).
    enum JSONScalar: Decodable {
        case string(String)
        case other(String)

        init(from decoder: Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let s = try? c.decode(String.self) { self = .string(s); return }
            if let n = try? c.decode(Double.self) { self = .other(String(n)); return }
            if let list = try? c.decode([[String: String]].self) {
                self = .other(list.map { $0.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ") }
                    .joined(separator: "\n"))
                return
            }
            self = .other("…")
        }

        var text: String {
            switch self {
            case .string(let s), .other(let s): return s
            }
        }
    }

    static func printFields(_ fields: [String: JSONScalar], skip: Set<String> = ["result", "id"]) {
        for key in fields.keys.sorted() where !skip.contains(key) {
            print("\(key): \(fields[key]!.text)")
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Network, signal, address and access point.")
        @OptionGroup var target: Target
        func run() async throws { WiFiCommand.printFields(try await target.send(["cmd": "wifi_status"])) }
    }

    struct Scan: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Visible networks.")
        @OptionGroup var target: Target
        func run() async throws { print(try await target.send(["cmd": "wifi_scan"])["networks"]?.text ?? "") }
    }

    struct Config: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Join a network (tried before it is kept).")
        @OptionGroup var target: Target
        @Option(help: "Network name.") var ssid: String
        @Option(help: "Password (leave out to keep the stored one for the same network).") var password: String?
        @Option(help: "sta (client only) or sta_ap (client and set-up access point).") var mode: String?

        func run() async throws {
            var fields = ["cmd": "wifi_config", "ssid": ssid]
            if let password { fields["password"] = password }
            if let mode { fields["mode"] = mode }
            WiFiCommand.printFields(try await target.send(fields))
            print("joined \(ssid)")
        }
    }

    struct AccessPoint: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ap", abstract: "Open (on) or close (off) the set-up access point.")
        @OptionGroup var target: Target
        @Argument(help: "on or off") var state: String

        func validate() throws {
            guard state == "on" || state == "off" else { throw ValidationError("say on or off") }
        }

        func run() async throws {
            WiFiCommand.printFields(try await target.send(["cmd": "wifi_ap", "state": state]))
        }
    }

    struct APPassword: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "ap-password",
            abstract: "Show, generate or set the set-up access point's password (per device, for its label).",
            discussion: """
                Without options: prints the current password (read from the state directory: run as root). \
                --generate: a new random password (12 characters without look-alikes, e.g. k7mq-x3ta-9wpe). \
                --set PW: 8 to 63 printable characters. The password is kept across firmware updates; a factory \
                reset (meter_factreset) brings back the default welinkwmlink. An open access point restarts with \
                the new password at once: phones on it must reconnect.
                """)
        @OptionGroup var target: Target
        @Flag(help: "Generate a new random password and print it.") var generate = false
        @Option(name: .customLong("set"), help: ArgumentHelp("Use this password.", valueName: "password")) var password: String?

        func validate() throws {
            if generate && password != nil { throw ValidationError("give --generate or --set, not both") }
            if let password, let problem = WiFiAccessPointPassword.problem(with: password) { throw ValidationError(problem) }
        }

        func run() async throws {
            let chosen: Secret
            if generate {
                chosen = try WiFiAccessPointPassword.generate()
            } else if let password {
                chosen = Secret(password)
            } else {
                let config: DeviceConfig?
                do { config = try StateStore.readConfig(directory: target.stateDir) } catch {
                    printError("cannot read the configuration in \(target.stateDir): \(error) (run as root)")
                    throw ExitStatus.failed.exit
                }
                let ap = config?.accessPoint ?? AccessPointSettings()
                let isDefault = ap.password.map { $0.isEmpty } ?? true
                print(ap.effectivePassword.revealed + (isDefault ? "   (the default: set a per-device one with --generate)" : ""))
                return
            }
            let reply = try await target.send(["cmd": "wifi_ap_password", "password": chosen.revealed])
            print("access point: \(reply["ap-ssid"]?.text ?? "")")
            print("password:     \(chosen.revealed)")
        }
    }

    /// Run as root by the unit (`ExecStartPre=-+`): the service itself lacks CAP_NET_ADMIN to add an interface.
    struct PrepareRadio: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "prepare-radio",
            abstract: "Add the access point interface uap0 when the radio can run access point and client at once (root).",
            discussion: """
                Reads the radio's valid interface combinations (iw phy ... info). A radio that allows one managed and \
                one AP interface at once (Pi 3/4/5/Zero 2 W: #{ managed } <= 1, #{ AP } <= 1, #channels <= 1) gets \
                uap0 (iw dev wlan0 interface add uap0 type __ap); the service then runs the set-up access point there, \
                on the client's channel, and keeps the client on wlan0. Otherwise it says the access point and the \
                client take turns. Exits 0 in every case: a board without WiFi must still start.
                """)
        @Option(help: ArgumentHelp("The client interface.", valueName: "name")) var interface = "wlan0"

        func run() throws {
            let radio = IWRadio(client: interface)
            do {
                switch try radio.capability() {
                case .single:
                    print("single radio: the access point and the client on \(interface) take turns")
                case .concurrent(let sameChannel):
                    let created = try radio.ensureAccessPointInterface()
                    print("concurrent radio: access point on \(IWRadio.defaultAccessPointInterface) "
                          + (created ? "(created)" : "(already there)")
                          + (sameChannel ? ", on the client's channel" : ""))
                }
            } catch {
                printError("prepare-radio: \(error); the access point and the client take turns")
            }
        }
    }
}
