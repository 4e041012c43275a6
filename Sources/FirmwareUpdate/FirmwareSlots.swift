import FoundationEssentials
import Glibc

/// Where installed versions live, under `<state-dir>/firmware/`:
///
///     slots/<version>-<sha8>/meterext     the binary (0755), written to a temp name, fsynced, renamed
///     slots/<version>-<sha8>/slot.json    its manifest (version, architecture, size, SHA-512), written last
///     current  -> slots/<name>            the version the launcher starts; switched by renaming a fresh symlink
///     previous -> slots/<name>            the last version known to be good
///     trial.json                          present while `current` is on trial: start attempts, limit, deadline
///     last_result.json                    what happened to the last update (committed / rolled back and why)
///     incoming/                           downloads and uploads being verified
///
/// Nothing here touches any other file of the state directory: configuration belongs to the config store.
public struct FirmwareLayout: Sendable {
    public let root: String

    public init(stateDirectory: String) { root = stateDirectory + "/firmware" }

    public var slotsDirectory: String { root + "/slots" }
    public var incomingDirectory: String { root + "/incoming" }
    public var currentLink: String { root + "/current" }
    public var previousLink: String { root + "/previous" }
    public var trialFile: String { root + "/trial.json" }
    public var resultFile: String { root + "/last_result.json" }
    public func slotDirectory(_ name: String) -> String { slotsDirectory + "/" + name }
    public func binaryPath(_ name: String) -> String { slotDirectory(name) + "/meterext" }
}

public struct SlotManifest: Codable, Equatable, Sendable {
    public var version: String
    public var architecture: String
    public var size: Int64
    public var sha512: String
    public var signedBy: String?

    enum CodingKeys: String, CodingKey {
        case version, architecture, size, sha512
        case signedBy = "signed_by"
    }
}

public struct TrialRecord: Codable, Equatable, Sendable {
    public var slot: String
    public var previous: String?
    public var attempts: Int
    public var maxAttempts: Int
    public var healthSeconds: Int
    public var startedAt: Int

    public init(slot: String, previous: String?, attempts: Int, maxAttempts: Int, healthSeconds: Int, startedAt: Int) {
        self.slot = slot
        self.previous = previous
        self.attempts = attempts
        self.maxAttempts = maxAttempts
        self.healthSeconds = healthSeconds
        self.startedAt = startedAt
    }

    enum CodingKeys: String, CodingKey {
        case slot, previous, attempts
        case maxAttempts = "max_attempts"
        case healthSeconds = "health_seconds"
        case startedAt = "started_at"
    }
}

public struct UpdateResultRecord: Codable, Equatable, Sendable {
    public var result: String // "committed" | "rolled_back" | "fell_back"
    public var slot: String
    public var reason: String
    public var at: Int
}

/// The slot store: install, switch to trial, commit, roll back. Every step leaves the directory in a state from
/// which `UpdateLauncher.prepare` starts a working version, whatever moment power is lost at.
public struct FirmwareSlots: Sendable {
    public let layout: FirmwareLayout
    public var log: @Sendable (String) -> Void

    public init(stateDirectory: String, log: @escaping @Sendable (String) -> Void = { _ in }) {
        layout = FirmwareLayout(stateDirectory: stateDirectory)
        self.log = log
    }

    static func isSlotName(_ name: String) -> Bool {
        UpdateImageHeader.isValidVersion(name)
    }

    func slotName(linkAt path: String) -> String? {
        guard let target = FileIO.readLink(path), target.hasPrefix("slots/") else { return nil }
        let name = String(target.dropFirst("slots/".count))
        return FirmwareSlots.isSlotName(name) ? name : nil
    }

    public var currentSlot: String? { slotName(linkAt: layout.currentLink) }
    public var previousSlot: String? { slotName(linkAt: layout.previousLink) }

    public func manifest(_ name: String) -> SlotManifest? {
        guard let bytes = try? FileIO.readFile(layout.slotDirectory(name) + "/slot.json", limit: 16384) else {
            return nil
        }
        return try? JSONDecoder().decode(SlotManifest.self, from: Data(bytes))
    }

    /// Nil when the slot holds a complete binary matching its manifest; otherwise why not.
    public func problem(withSlot name: String, checkHash: Bool) -> String? {
        guard let manifest = manifest(name) else { return "slot \(name) has no readable manifest" }
        let binary = layout.binaryPath(name)
        guard FileIO.isRegularFile(binary), let size = FileIO.fileSize(binary) else {
            return "slot \(name) has no binary"
        }
        guard size == manifest.size else { return "slot \(name): binary is \(size) bytes, expected \(manifest.size)" }
        guard access(binary, X_OK) == 0 else { return "slot \(name): binary is not executable" }
        if checkHash {
            guard let fd = try? FileIO.openFile(binary, O_RDONLY) else { return "slot \(name): binary unreadable" }
            defer { close(fd) }
            var hasher = SHA512Hasher()
            while let chunk = try? FileIO.readUpTo(fd, 1 << 16, path: binary), !chunk.isEmpty { hasher.update(chunk) }
            guard Crypto.hex(hasher.finalize()) == manifest.sha512 else {
                return "slot \(name): binary does not match its SHA-512 (damaged storage?)"
            }
        }
        return nil
    }

    // MARK: install

    /// Copies a verified image's payload into its own slot; the slot appears under its final name only once the
    /// binary and manifest are complete and on disk. Returns the slot name.
    public func install(_ image: VerifiedImage) throws -> String {
        let hash = Crypto.hex(image.header.payloadSHA512)
        let name = "\(image.header.firmwareVersion)-\(hash.prefix(8))"
        let final = layout.slotDirectory(name)
        try FileIO.makeDirectories(layout.slotsDirectory)
        if FileIO.exists(final) {
            if problem(withSlot: name, checkHash: true) == nil { return name }
            log("slot \(name) exists but is damaged; replacing it")
            if currentSlot == name || previousSlot == name {
                throw UpdateError("slot_in_use", "slot \(name) is damaged and in use; cannot replace it now")
            }
            FileIO.removeTree(final)
        }
        let partial = layout.slotsDirectory + "/.partial-" + name
        FileIO.removeTree(partial)
        try FileIO.makeDirectories(partial)

        let source = try FileIO.openFile(image.path, O_RDONLY)
        defer { close(source) }
        guard lseek(source, off_t(image.payloadOffset), SEEK_SET) == off_t(image.payloadOffset) else {
            throw UpdateError.io("seek", image.path, errno: errno)
        }
        let temp = partial + "/meterext.tmp"
        let out = try FileIO.openFile(temp, O_WRONLY | O_CREAT | O_TRUNC, mode: 0o755)
        var hasher = SHA512Hasher()
        do {
            var remaining = Int64(image.header.payloadLength)
            while remaining > 0 {
                let chunk = try FileIO.readUpTo(source, Int(min(remaining, 1 << 16)), path: image.path)
                guard !chunk.isEmpty else { throw UpdateError("image_truncated", "the image shrank while installing") }
                hasher.update(chunk)
                try FileIO.writeAll(out, chunk, path: temp)
                remaining -= Int64(chunk.count)
            }
            _ = fchmod(out, 0o755)
            try FileIO.fsyncFile(out, path: temp)
            close(out)
        } catch {
            close(out)
            throw error
        }
        // Hash what was actually copied, not only what was verified: the copy is what will run.
        guard hasher.finalize() == image.header.payloadSHA512 else {
            throw UpdateError("payload_mismatch", "the payload changed while it was being installed")
        }
        try FileIO.rename(temp, partial + "/meterext")
        let manifest = SlotManifest(version: image.header.firmwareVersion, architecture: image.header.architecture,
                                    size: Int64(image.header.payloadLength), sha512: hash, signedBy: image.signedBy)
        try FileIO.atomicWrite(partial + "/slot.json", Array(try JSONEncoder().encode(manifest)))
        try FileIO.rename(partial, final)
        try FileIO.fsyncDirectory(layout.slotsDirectory)
        return name
    }

    /// The version the board runs once nothing is on trial: the current slot's, the previous slot's while the
    /// current one is on trial, and `packaged` when no installed version is in use.
    public func committedVersion(packaged: String?) -> String? {
        let committedSlot = activeTrial().map { $0.previous } ?? currentSlot
        guard let committedSlot else { return packaged }
        return manifest(committedSlot)?.version ?? packaged
    }

    // MARK: trial, commit, rollback

    public func readTrial() -> TrialRecord? {
        guard let bytes = try? FileIO.readFile(layout.trialFile, limit: 16384) else { return nil }
        return try? JSONDecoder().decode(TrialRecord.self, from: Data(bytes))
    }

    func writeTrial(_ record: TrialRecord) throws {
        try FileIO.atomicWrite(layout.trialFile, Array(try JSONEncoder().encode(record)))
    }

    func clearTrial() throws {
        try FileIO.removeIfPresent(layout.trialFile)
        try FileIO.fsyncDirectory(layout.root)
    }

    public func readResult() -> UpdateResultRecord? {
        guard let bytes = try? FileIO.readFile(layout.resultFile, limit: 16384) else { return nil }
        return try? JSONDecoder().decode(UpdateResultRecord.self, from: Data(bytes))
    }

    func writeResult(_ result: String, slot: String, reason: String) {
        let record = UpdateResultRecord(result: result, slot: slot, reason: reason, at: Int(time(nil)))
        do { try FileIO.atomicWrite(layout.resultFile, Array(try JSONEncoder().encode(record))) } catch {
            log("could not record the update result: \(error)")
        }
    }

    /// A trial whose slot is not `current` is left over from a switch or rollback cut short; it means nothing.
    public func activeTrial() -> TrialRecord? {
        guard let trial = readTrial() else {
            return nil
        }
        return trial.slot == currentSlot ? trial : nil
    }

    public enum SwitchOutcome: Equatable, Sendable {
        case switched(previous: String?)
        case alreadyCurrent
    }

    /// Makes `slot` the current version, on trial: it must report healthy within `maxAttempts` starts.
    ///
    /// Order matters for power cuts: trial record first (harmless while `current` still names the old slot), then
    /// `previous`, then `current` in one rename.
    public func beginTrial(slot: String, maxAttempts: Int, healthSeconds: Int) throws -> SwitchOutcome {
        if let problem = problem(withSlot: slot, checkHash: true) {
            throw UpdateError("slot_damaged", problem)
        }
        let current = currentSlot
        if current == slot { return .alreadyCurrent }
        if let trial = activeTrial() {
            throw UpdateError("trial_running", "version \(trial.slot) is still on trial; it must be confirmed "
                              + "healthy (or rolled back) before another update")
        }
        let record = TrialRecord(slot: slot, previous: current, attempts: 0, maxAttempts: max(1, maxAttempts),
                                 healthSeconds: max(1, healthSeconds), startedAt: Int(time(nil)))
        try writeTrial(record)
        if let current {
            try FileIO.atomicSymlink(target: "slots/" + current, at: layout.previousLink)
        }
        try FileIO.atomicSymlink(target: "slots/" + slot, at: layout.currentLink)
        return .switched(previous: current)
    }

    /// Confirms the slot on trial; removes slots that are neither current nor previous.
    @discardableResult
    public func commit(runningSlot: String?) throws -> Bool {
        guard let trial = activeTrial(), runningSlot == trial.slot else { return false }
        try clearTrial()
        writeResult("committed", slot: trial.slot, reason: "reported healthy on start \(trial.attempts)")
        log("firmware \(trial.slot) confirmed healthy")
        collectGarbage()
        return true
    }

    /// Switches back from the slot on trial to the previous version (or to the packaged binary if there is none).
    public func rollback(reason: String) throws {
        guard let trial = activeTrial() else { return }
        log("rolling back firmware \(trial.slot): \(reason)")
        writeResult("rolled_back", slot: trial.slot, reason: reason)
        try switchAway(from: trial.slot, to: trial.previous)
        try clearTrial()
    }

    /// Leaves a committed slot that cannot run (damaged, or exec failed): previous if it is sound, else packaged.
    public func abandonCurrent(reason: String) throws {
        if activeTrial() != nil { return try rollback(reason: reason) }
        guard let current = currentSlot else { return try FileIO.removeIfPresent(layout.currentLink) }
        log("leaving firmware \(current): \(reason)")
        writeResult("fell_back", slot: current, reason: reason)
        try switchAway(from: current, to: previousSlot)
    }

    private func switchAway(from bad: String, to target: String?) throws {
        if let target, target != bad, problem(withSlot: target, checkHash: true) == nil {
            try FileIO.atomicSymlink(target: "slots/" + target, at: layout.currentLink)
        } else {
            try FileIO.removeIfPresent(layout.currentLink)
            try FileIO.fsyncDirectory(layout.root)
        }
    }

    public func collectGarbage() {
        let keep = Set([currentSlot, previousSlot, readTrial()?.slot].compactMap { $0 })
        for name in FileIO.listDirectory(layout.slotsDirectory) where !keep.contains(name) {
            FileIO.removeTree(layout.slotDirectory(name))
        }
        for name in FileIO.listDirectory(layout.incomingDirectory) where name.hasPrefix(".") {
            FileIO.removeTree(layout.incomingDirectory + "/" + name)
        }
    }
}
