import Platform
import ArgumentParser
import FirmwareUpdate
import FoundationEssentials
import Glibc

/// `meterext image ...`: make keys, build and sign update images, check them, install them, and the launcher steps
/// (for `make release`, installers and field staff).
struct ImageCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "image",
        abstract: "Build, sign, verify and install firmware update images.",
        subcommands: [Keygen.self, Sign.self, Verify.self, Install.self, Status.self, Launch.self, MarkHealthy.self])

    struct Keygen: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create an ed25519 signing key pair (keep the secret key off the boards).")
        @Option(name: .customLong("out-secret"), help: "Secret key file to create (mode 0600).")
        var outSecret: String
        @Option(name: .customLong("out-public"), help: "Public key file to create (install in /etc/meterext/keys/).")
        var outPublic: String

        func run() throws {
            let key = try cliCall { try SigningKeys.generate(secretPath: outSecret, publicPath: outPublic) }
            print("key id \(key.idHex): secret key in \(outSecret), public key in \(outPublic)")
        }
    }

    struct Sign: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Build a signed update image from a binary.")
        @Option(help: "Secret key file (from `image keygen`).") var key: String?
        @Flag(help: "Build an unsigned image (development boards with allow-unsigned only).") var unsigned = false
        @Option(help: "Firmware version, e.g. 1.4.0.") var version: String
        @Option(help: "Target architecture: aarch64, armv7 or x86_64.") var arch: String
        @Option(help: "The meterext binary to ship.") var binary: String
        @Option(help: "Image file to write.") var out: String

        func validate() throws {
            if (key == nil) == !unsigned { throw ValidationError("give exactly one of --key FILE or --unsigned") }
        }

        func run() throws {
            try cliCall {
                let secret = try key.map { try SigningKeys.readSecretKey(path: $0) }
                let payload = try readWholeFile(binary)
                let image = try UpdateImage.build(payload: payload, firmwareVersion: version, architecture: arch,
                                                  secretKey: secret)
                try writeWholeFile(out, image)
                let by = secret.map { "key " + Crypto.hex(Ed25519.keyID(publicKey: Ed25519.publicKey(fromSecretKey: $0))) }
                print("\(out): meterext \(version) for \(arch), \(payload.count) byte payload, signed by "
                      + (by ?? "nobody (UNSIGNED)"))
            }
        }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Check an image as a board would; exit 1 if refused.")
        @Option(help: "Directory of trusted public keys (*.pub).") var keys = "/etc/meterext/keys"
        @Option(help: "Architecture the image must target (default: this machine's).") var arch: String?
        @Flag(name: .customLong("allow-unsigned"), help: "Accept unsigned images.") var allowUnsigned = false
        @Option(name: .customLong("max-bytes"), help: "Largest image accepted.") var maxBytes: Int64 = 64 << 20
        @Argument(help: "Image file.") var file: String

        func run() throws {
            try cliCall {
                let policy = ImagePolicy(keysDirectory: keys, allowUnsigned: allowUnsigned,
                                         architecture: arch ?? UpdateImage.hostArchitecture, maxImageBytes: maxBytes)
                let image = try UpdateImage.verify(path: file, policy: policy, log: logToStderr)
                print("OK \(image.header.firmwareVersion) \(image.header.architecture) "
                      + "payload=\(image.header.payloadLength) signed_by=\(image.signedBy ?? "UNSIGNED")")
            }
        }
    }

    struct Install: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Verify an image (file or http/https URL), install it side by side and switch to it on trial.")
        @OptionGroup var board: UpdateBoardOptions
        @Option(name: .customLong("max-attempts"), help: "Starts the new version gets to report healthy.")
        var maxAttempts = 3
        @Option(name: .customLong("health-seconds"), help: "Seconds the new version gets to become healthy.")
        var healthSeconds = 300
        @Option(help: "CA file name from the certificate folder, for https URLs.") var cert: String?
        @Flag(name: .customLong("allow-downgrade"),
              help: "Install a version older than the installed one (refused otherwise; never possible over the API).")
        var allowDowngrade = false
        @Argument(help: "Image file or http(s) URL.") var source: String

        func run() throws {
            var config = board.configuration()
            config.allowDowngrade = allowDowngrade
            config.maxStartAttempts = maxAttempts
            config.healthDeadlineSeconds = healthSeconds
            let updater = FirmwareUpdater(configuration: config, runningSlot: nil)
            if source.lowercased().hasPrefix("http://") || source.lowercased().hasPrefix("https://") {
                _ = try cliCall { try updater.startUpdate(firmwareURI: source, cert: cert).get() }
                let status = updater.waitUntilSettled(timeoutSeconds: 24 * 3600)
                printJSON(status)
                if status.state == .failed { throw ExitStatus.failed.exit }
            } else {
                let bytes = try cliCall { try readWholeFile(source) }
                printJSON(try cliCall { try updater.installUploadedImage(bytes).get() })
            }
        }
    }

    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show installed versions, trial and last result.")
        @OptionGroup var state: StateDirectoryOptions
        var stateDir: String { state.path }

        func run() throws {
            let slots = FirmwareSlots(stateDirectory: stateDir)
            var lines = ["current: \(slots.currentSlot ?? "(packaged binary)")",
                         "previous: \(slots.previousSlot ?? "-")"]
            if let trial = slots.activeTrial() {
                lines.append("trial: \(trial.slot), start \(trial.attempts) of \(trial.maxAttempts)")
            }
            if let result = slots.readResult() {
                lines.append("last result: \(result.result) \(result.slot): \(result.reason)")
            }
            print(lines.joined(separator: "\n"))
        }
    }

    struct Launch: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run the launcher step of `meterext run` alone: exec the current version or say why not.")
        @OptionGroup var state: StateDirectoryOptions
        var stateDir: String { state.path }

        func run() throws {
            let decision = UpdateLauncher.launch(stateDirectory: stateDir, log: logToStderr)
            if case .runSelf(let reason) = decision { print("packaged: \(reason)") }
        }
    }

    struct MarkHealthy: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "mark-healthy", abstract: "Confirm the version on trial (what `run` does once healthy).")
        @OptionGroup var state: StateDirectoryOptions
        var stateDir: String { state.path }
        @Option(help: "Slot to confirm (default: the slot this process was launched from).") var slot: String?

        func run() throws {
            let committed = try cliCall {
                try UpdateLauncher.markHealthy(stateDirectory: stateDir, runningSlot: slot ?? UpdateLauncher.runningSlot,
                                               log: logToStderr)
            }
            print(committed ? "committed" : "nothing on trial for this slot")
        }
    }
}

/// `meterext net ...`: the download_file and request_post commands from a shell, with the board's CA folder.
struct NetCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "net", abstract: "Download a file or POST a message as the /api commands do.",
        subcommands: [Download.self, Post.self])

    struct Download: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "download_file: store a URL under <state-dir>/downloads.")
        @OptionGroup var board: UpdateBoardOptions
        @Option(help: "CA file name from the certificate folder, for https URLs.") var cert: String?
        @Argument(help: "http(s) URL.") var url: String

        func run() throws {
            printJSON(try cliCall {
                try NetworkCommands(configuration: board.configuration()).downloadFile(fileURI: url, cert: cert).get()
            })
        }
    }

    struct Post: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "request_post: POST a message, print the reply.")
        @OptionGroup var board: UpdateBoardOptions
        @Option(help: "CA file name from the certificate folder, for https URLs.") var cert: String?
        @Argument(help: "http(s) URL.") var url: String
        @Argument(help: "Message body.") var message: String

        func run() throws {
            printJSON(try cliCall {
                try NetworkCommands(configuration: board.configuration())
                    .requestPost(fileURI: url, message: message, cert: cert).get()
            })
        }
    }
}

struct UpdateBoardOptions: ParsableArguments {
    @OptionGroup var state: StateDirectoryOptions
        var stateDir: String { state.path }
    @Option(help: "Directory of trusted public keys (*.pub).") var keys = "/etc/meterext/keys"
    @Option(name: .customLong("cert-dir"), help: "Certificate folder (default <state-dir>/certs).") var certDir: String?
    @Flag(name: .customLong("allow-unsigned"), help: "Development boards: accept unsigned images.")
    var allowUnsigned = false
    @Option(help: "Architecture images must target (default: this machine's).") var arch: String?
    @Option(name: .customLong("max-bytes"), help: "Largest image or download accepted.") var maxBytes: Int64 = 64 << 20
    @Option(name: .customLong("connect-timeout"), help: "Seconds to connect.") var connectTimeout = 15
    @Option(name: .customLong("stall-seconds"), help: "Abort when (almost) no data arrives for this long.")
    var stallSeconds = 30
    @Flag(name: .customLong("allow-local-addresses"),
          help: "Also connect to loopback, link-local and this board's own addresses (refused by default, as the API does).")
    var allowLocalAddresses = false

    func configuration() -> UpdateConfiguration {
        var config = UpdateConfiguration(
            stateDirectory: stateDir, keysDirectory: keys, certificateDirectory: certDir, allowUnsigned: allowUnsigned,
            architecture: arch ?? UpdateImage.hostArchitecture, maxImageBytes: maxBytes, maxDownloadBytes: maxBytes,
            connectTimeoutSeconds: connectTimeout, lowSpeedSeconds: stallSeconds, log: logToStderr)
        config.packagedVersion = BuildInfo.version
        if allowLocalAddresses { config.outgoingPolicy = .unrestricted }
        return config
    }
}

@Sendable private func logToStderr(_ line: String) {
    fputs("meterext: \(line)\n", stderr)
}

/// Runs `body`; an `UpdateError` becomes "error: code: message" on stderr and exit status 1.
private func cliCall<T>(_ body: () throws -> T) throws -> T {
    do { return try body() } catch let error as UpdateError {
        fputs("error: \(error.code): \(error.message)\n", stderr)
        throw ExitStatus.failed.exit
    }
}

private func printJSON<T: Encodable>(_ value: T) {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    if let data = try? encoder.encode(value) { print(String(decoding: data, as: UTF8.self)) }
}

/// A whole file (binaries, images) through Platform's reader; failures are `io_error`.
private func readWholeFile(_ path: String) throws -> [UInt8] {
    do { return try readSmallFile(path, limit: Int.max) } catch {
        throw UpdateError("io_error", "cannot read \(path): \(error.errnoText)")
    }
}

/// Writes an image file with Platform's atomic writer (a new file is 0644).
private func writeWholeFile(_ path: String, _ bytes: [UInt8]) throws {
    do { try AtomicFile.write(bytes, to: path, mode: 0o644) } catch {
        throw UpdateError("io_error", "cannot write \(path): \(error.errnoText)")
    }
}
