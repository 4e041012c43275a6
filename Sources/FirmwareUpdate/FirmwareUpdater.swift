import Platform
import Glibc
import Synchronization

public enum UpdateState: String, Codable, Sendable {
    case idle, downloading, verifying, installing
    /// Switched to the new version; waiting for the restart into it.
    case installed
    /// This process is a new version that has not yet been confirmed healthy.
    case trial
    case failed
}

extension UpdateError: Codable {
    enum CodingKeys: String, CodingKey { case code, message }
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(try c.decode(String.self, forKey: .code), try c.decode(String.self, forKey: .message))
    }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(code, forKey: .code)
        try c.encode(message, forKey: .message)
    }
}

/// The update part of `system_status`.
public struct UpdateStatus: Codable, Equatable, Sendable {
    public var state: UpdateState
    public var bytes: Int64 = 0
    public var total: Int64?
    public var percent: Int?
    /// The version being (or last) installed.
    public var version: String?
    /// The slot this process runs from, or "packaged".
    public var running: String
    public var lastError: UpdateError?
    /// The launcher's last recorded outcome (committed / rolled back and why).
    public var lastResult: UpdateResultRecord?

    enum CodingKeys: String, CodingKey {
        case state, bytes, total, percent, version, running
        case lastError = "last_error"
        case lastResult = "last_result"
    }
}

public struct UpdateAccepted: Encodable, Equatable, Sendable {
    public var result = "OK"
    public var state = UpdateState.downloading
    public init() {}
}

public struct InstalledFirmware: Encodable, Equatable, Sendable {
    public var result = "OK"
    public var version: String
    public var slot: String
    /// Key id that signed the image, nil when unsigned images are allowed and this one was unsigned.
    public var signedBy: String?
    /// True when this exact version was already the current one: nothing switched, no restart needed.
    public var alreadyCurrent: Bool

    enum CodingKeys: String, CodingKey {
        case result, version, slot
        case signedBy = "signed_by"
        case alreadyCurrent = "already_current"
    }
}

/// `firmware_update` and the `/ota` upload. One update at a time; downloads run on their own thread and report
/// progress through `status()`.
public final class FirmwareUpdater: Sendable {
    public let configuration: UpdateConfiguration
    private let slots: FirmwareSlots
    private let runningSlot: String?
    private let progress: Mutex<UpdateStatus>

    public init(configuration: UpdateConfiguration, runningSlot: String? = UpdateLauncher.runningSlot) {
        self.configuration = configuration
        self.runningSlot = runningSlot
        slots = FirmwareSlots(stateDirectory: configuration.stateDirectory, log: configuration.log)
        var initial = UpdateStatus(state: .idle, running: runningSlot ?? "packaged")
        initial.lastResult = slots.readResult()
        if let trial = slots.activeTrial(), trial.slot == runningSlot {
            initial.state = .trial
            initial.version = slots.manifest(trial.slot)?.version
        } else if let result = initial.lastResult, result.result != "committed" {
            initial.lastError = UpdateError(result.result, "firmware \(result.slot): \(result.reason)")
        }
        progress = Mutex(initial)
    }

    public func status() -> UpdateStatus {
        var status = progress.withLock { $0 }
        if status.state == .trial, slots.activeTrial()?.slot != runningSlot {
            status.state = .idle // committed (or rolled back) since
        }
        return status
    }

    private static let busyStates: Set<UpdateState> = [.downloading, .verifying, .installing, .installed]

    /// Claims the single update slot; fails with `busy` when another update (download or upload) is under way.
    private func claim(source: String, state: UpdateState) -> UpdateError? {
        progress.withLock { status in
            if FirmwareUpdater.busyStates.contains(status.state) {
                return .busy(status.state == .installed ? "restart pending" : status.state.rawValue)
            }
            status.state = state
            status.bytes = 0
            status.total = nil
            status.percent = nil
            status.version = nil
            status.lastError = nil
            return nil
        }
    }

    private func update(_ body: (inout UpdateStatus) -> Void) { progress.withLock { body(&$0) } }

    private func fail(_ error: UpdateError) {
        configuration.log("firmware update failed: \(error)")
        update { $0.state = .failed; $0.lastError = error }
    }

    /// Starts `firmware_update`: checks the request, answers at once, downloads and installs in the background.
    public func startUpdate(firmwareURI: String, cert: String?) -> Result<UpdateAccepted, UpdateError> {
        let trust: TLSTrust?
        do { trust = try configuration.certificates.trust(for: firmwareURI, cert: cert) } catch {
            return .failure(error as! UpdateError)
        }
        if let error = claim(source: firmwareURI, state: .downloading) { return .failure(error) }
        configuration.log("firmware update: downloading \(firmwareURI)")
        do {
            try OSThread.detach(name: "meterext-update") { [self] in
                switch download(firmwareURI, trust: trust).flatMap({ verifyAndInstall(imageAt: $0) }) {
                case .success: break
                case .failure(let error): fail(error)
                }
            }
        } catch {
            let failure = UpdateError("io_error", "\(error)")
            fail(failure)
            return .failure(failure)
        }
        return .success(UpdateAccepted())
    }

    private func download(_ url: String, trust: TLSTrust?) -> Result<String, UpdateError> {
        Result {
            try FileIO.makeDirectories(slots.layout.incomingDirectory)
            slots.collectGarbage() // leftovers of an interrupted update
            let path = slots.layout.incomingDirectory + "/.download-\(getpid())-\(UInt32.random(in: 0 ... .max))"
            let fd = try FileIO.openFile(path, O_WRONLY | O_CREAT | O_EXCL, mode: 0o600)
            defer { close(fd) }
            var writeError: UpdateError?
            let outcome: HTTPTransfer.Outcome
            do {
                outcome = try HTTPTransfer.perform(
                    url: url, trust: trust, limits: configuration.transferLimits(maxBytes: configuration.maxImageBytes),
                    onData: { chunk in
                        do { try FileIO.writeAll(fd, chunk, path: path); return true } catch {
                            writeError = error as? UpdateError
                            return false
                        }
                    },
                    onProgress: { [self] now, total in
                        update { s in
                            s.bytes = now
                            s.total = total > 0 ? total : nil
                            s.percent = total > 0 ? Int(min(100, now * 100 / total)) : nil
                        }
                    })
                if let writeError { throw writeError }
                guard (200..<300).contains(outcome.status) else {
                    throw UpdateError("http_status", "the server answered HTTP \(outcome.status)")
                }
            } catch {
                unlink(path)
                throw error
            }
            update { $0.bytes = outcome.bytes }
            return path
        }.mapError { $0 as? UpdateError ?? UpdateError("transfer_failed", "\($0)") }
    }

    /// Verifies an image file, installs it into a slot and switches to it on trial. Removes the file.
    private func verifyAndInstall(imageAt path: String) -> Result<InstalledFirmware, UpdateError> {
        defer { unlink(path) }
        return Result {
            update { $0.state = .verifying }
            let image = try UpdateImage.verify(path: path, policy: configuration.imagePolicy, log: configuration.log)
            try checkNotOlder(image.header.firmwareVersion)
            update { $0.state = .installing; $0.version = image.header.firmwareVersion }
            let slot = try slots.install(image)
            let outcome = try slots.beginTrial(slot: slot, maxAttempts: configuration.maxStartAttempts,
                                               healthSeconds: configuration.healthDeadlineSeconds)
            let installed = InstalledFirmware(version: image.header.firmwareVersion, slot: slot,
                                              signedBy: image.signedBy, alreadyCurrent: outcome == .alreadyCurrent)
            if installed.alreadyCurrent {
                configuration.log("firmware \(slot) is already the current version; nothing to switch")
                update { $0.state = .idle }
            } else {
                configuration.log("firmware \(slot) installed and switched in on trial; restarting into it")
                update { $0.state = .installed }
                configuration.onInstalled(slot)
            }
            return installed
        }.mapError { $0 as? UpdateError ?? UpdateError("install_failed", "\($0)") }
    }

    /// Anti-rollback: an older version may carry a fixed vulnerability; only the board's CLI can allow it.
    private func checkNotOlder(_ version: String) throws {
        guard !configuration.allowDowngrade,
              let committed = slots.committedVersion(packaged: configuration.packagedVersion),
              FirmwareVersion(version) < FirmwareVersion(committed) else { return }
        throw UpdateError("downgrade", "version \(version) is older than the installed version \(committed); "
                          + "older versions are refused (an installer on the board can allow it: "
                          + "meterext image install --allow-downgrade)")
    }

    /// The `/ota` upload: the same checks as `firmware_update`, synchronously. On success the new version is
    /// switched in and `onInstalled` has been called; reply with `OTAPage.replyText(for:)`.
    public func installUploadedImage(_ bytes: [UInt8]) -> Result<InstalledFirmware, UpdateError> {
        guard Int64(bytes.count) <= configuration.maxImageBytes else {
            return .failure(UpdateError("image_too_large", "the upload is \(bytes.count) bytes; the limit is "
                                        + "\(configuration.maxImageBytes)"))
        }
        if let error = claim(source: "upload", state: .verifying) { return .failure(error) }
        let result = Result { () throws -> String in
            try FileIO.makeDirectories(slots.layout.incomingDirectory)
            slots.collectGarbage()
            let path = slots.layout.incomingDirectory + "/.upload-\(getpid())-\(UInt32.random(in: 0 ... .max))"
            let fd = try FileIO.openFile(path, O_WRONLY | O_CREAT | O_EXCL, mode: 0o600)
            defer { close(fd) }
            do { try FileIO.writeAll(fd, bytes, path: path) } catch { unlink(path); throw error }
            update { $0.bytes = Int64(bytes.count); $0.total = Int64(bytes.count); $0.percent = 100 }
            return path
        }.mapError { $0 as? UpdateError ?? UpdateError("io_error", "\($0)") }.flatMap { verifyAndInstall(imageAt: $0) }
        if case .failure(let error) = result { fail(error) }
        return result
    }

    public func installUploadedImage(_ bytes: [UInt8]) async -> Result<InstalledFirmware, UpdateError> {
        await onOwnThread("meterext-install") { self.installUploadedImage(bytes) }
    }

    /// Waits until no update is running (tests, CLI). Returns the final status.
    public func waitUntilSettled(timeoutSeconds: Double) -> UpdateStatus {
        let deadline = MonotonicClock.nowSeconds() + timeoutSeconds
        while FirmwareUpdater.busyStates.subtracting([.installed]).contains(status().state),
              MonotonicClock.nowSeconds() < deadline {
            usleep(20_000)
        }
        return status()
    }
}
