import FirmwareUpdate
import FoundationEssentials
import Glibc
import Synchronization
import XCTest

/// Temp directories with a state dir, a keys dir and a signing key.
final class Fixture {
    let root: String
    let stateDir: String
    let keysDir: String
    let secretKey: [UInt8]

    init() throws {
        var template = Array("/tmp/fwupdate-test-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw UpdateError("io_error", "mkdtemp") }
        root = String(cString: made)
        stateDir = root + "/state"
        keysDir = root + "/keys"
        mkdir(stateDir, 0o755)
        mkdir(keysDir, 0o755)
        let pair = Ed25519.generateKeyPair()
        secretKey = pair.secretKey
        try write(keysDir + "/release.pub", Array(SigningKeys.encodePublic(pair.publicKey).utf8))
    }

    deinit { _ = system("rm -rf '\(root)'") }

    func write(_ path: String, _ bytes: [UInt8], mode: mode_t = 0o644) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode)
        guard fd >= 0 else { throw UpdateError("io_error", "open \(path)") }
        defer { close(fd) }
        _ = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
    }

    func read(_ path: String) -> [UInt8]? {
        guard let f = fopen(path, "rb") else { return nil }
        defer { fclose(f) }
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        while case let n = fread(&buf, 1, buf.count, f), n > 0 { out += buf[..<n] }
        return out
    }

    /// A stand-in binary: a shell script that says which version it is.
    func script(_ version: String) -> [UInt8] { Array("#!/bin/sh\necho \(version)\n".utf8) }

    func image(_ version: String, arch: String = "x86_64", signed: Bool = true) throws -> String {
        let bytes = try UpdateImage.build(payload: script(version), firmwareVersion: version, architecture: arch,
                                          secretKey: signed ? secretKey : nil)
        let path = root + "/\(version)-\(arch)-\(signed).img"
        try write(path, bytes)
        return path
    }

    var policy: ImagePolicy { ImagePolicy(keysDirectory: keysDir, architecture: "x86_64", maxImageBytes: 1 << 20) }

    var slots: FirmwareSlots { FirmwareSlots(stateDirectory: stateDir) }

    /// Installs a version and switches to it on trial.
    @discardableResult
    func installOnTrial(_ version: String, maxAttempts: Int = 3) throws -> String {
        let image = try UpdateImage.verify(path: try self.image(version), policy: policy)
        let slot = try slots.install(image)
        _ = try slots.beginTrial(slot: slot, maxAttempts: maxAttempts, healthSeconds: 60)
        return slot
    }

    /// Installs a version and confirms it, as a healthy first start would.
    @discardableResult
    func installCommitted(_ version: String) throws -> String {
        let slot = try installOnTrial(version)
        XCTAssertEqual(UpdateLauncher.prepare(stateDirectory: stateDir, launchedSlot: nil),
                       .exec(slot: slot, path: slots.layout.binaryPath(slot), trialAttempt: 1))
        XCTAssertTrue(try UpdateLauncher.markHealthy(stateDirectory: stateDir, runningSlot: slot))
        return slot
    }
}

func errorCode<T>(_ result: Result<T, UpdateError>) -> String? {
    if case .failure(let error) = result { return error.code }
    return nil
}

func XCTAssertRefused<T>(_ code: String, _ body: @autoclosure () throws -> T, file: StaticString = #filePath,
                         line: UInt = #line) {
    XCTAssertThrowsError(try body(), file: file, line: line) { error in
        XCTAssertEqual((error as? UpdateError)?.code, code, "\(error)", file: file, line: line)
    }
}

final class UpdateImageTests: XCTestCase {
    func testSignedImageVerifiesAndRecordsTheKey() throws {
        let f = try Fixture()
        let verified = try UpdateImage.verify(path: try f.image("1.2.3"), policy: f.policy)
        XCTAssertEqual(verified.header.firmwareVersion, "1.2.3")
        XCTAssertEqual(verified.header.architecture, "x86_64")
        XCTAssertEqual(verified.header.payloadLength, UInt64(f.script("1.2.3").count))
        XCTAssertEqual(verified.signedBy, Crypto.hex(Ed25519.keyID(publicKey: Ed25519.publicKey(fromSecretKey: f.secretKey))))
    }

    func testEveryKindOfBadImageIsRefusedWithItsReason() throws {
        let f = try Fixture()
        let good = f.read(try f.image("1.0"))!
        func refuse(_ code: String, _ bytes: [UInt8], policy: ImagePolicy? = nil, line: UInt = #line) throws {
            let path = f.root + "/bad.img"
            try f.write(path, bytes)
            XCTAssertRefused(code, try UpdateImage.verify(path: path, policy: policy ?? f.policy), line: line)
        }
        var payloadFlip = good
        payloadFlip[payloadFlip.count - 2] ^= 1
        try refuse("payload_mismatch", payloadFlip)
        var headerFlip = good
        headerFlip[20] ^= 1 // inside the version/arch strings: covered by the signature
        try refuse("bad_signature", headerFlip)
        var signatureFlip = good
        signatureFlip[good.count - f.script("1.0").count - 1] ^= 1
        try refuse("bad_signature", signatureFlip)
        try refuse("image_truncated", Array(good.dropLast(3)))
        try refuse("image_truncated", Array(good.prefix(40)))
        try refuse("bad_image", good + [0])
        try refuse("bad_image", f.script("bare binary"))
        try refuse("image_too_large", good, policy: ImagePolicy(keysDirectory: f.keysDir, architecture: "x86_64",
                                                                maxImageBytes: Int64(good.count - 1)))
        try refuse("wrong_architecture", f.read(try f.image("1.0", arch: "aarch64"))!)
        try refuse("unsigned_image", f.read(try f.image("1.0", signed: false))!)
        // Signed with a key the board does not have:
        let stranger = try UpdateImage.build(payload: [1, 2, 3], firmwareVersion: "9", architecture: "x86_64",
                                             secretKey: Ed25519.generateKeyPair().secretKey)
        try refuse("unknown_key", stranger)
        try refuse("no_keys", good, policy: ImagePolicy(keysDirectory: f.root + "/nokeys", architecture: "x86_64"))
    }

    func testUnsignedImagesOnlyWhenAllowedAndStillChecked() throws {
        let f = try Fixture()
        var policy = f.policy
        policy.allowUnsigned = true
        let warnings = Mutex<[String]>([])
        let image = try UpdateImage.verify(path: try f.image("0.9-dev", signed: false), policy: policy) { line in
            warnings.withLock { $0.append(line) }
        }
        XCTAssertNil(image.signedBy)
        XCTAssertTrue(warnings.withLock { $0 }.contains { $0.contains("UNSIGNED") })
        var corrupted = f.read(try f.image("0.9-dev", signed: false))!
        corrupted[corrupted.count - 1] ^= 1
        try f.write(f.root + "/u.img", corrupted)
        XCTAssertRefused("payload_mismatch", try UpdateImage.verify(path: f.root + "/u.img", policy: policy))
    }

    func testKeyFilesRoundTripAndRejectGarbage() throws {
        let f = try Fixture()
        let key = try SigningKeys.generate(secretPath: f.root + "/sk", publicPath: f.root + "/pk.pub")
        XCTAssertEqual(try SigningKeys.readPublicKey(path: f.root + "/pk.pub"), key)
        XCTAssertEqual(Ed25519.publicKey(fromSecretKey: try SigningKeys.readSecretKey(path: f.root + "/sk")), key.bytes)
        var st = stat()
        stat(f.root + "/sk", &st)
        XCTAssertEqual(st.st_mode & 0o777, 0o600)
        XCTAssertRefused("exists", try SigningKeys.generate(secretPath: f.root + "/sk", publicPath: f.root + "/x"))
        try f.write(f.keysDir + "/broken.pub", Array("meterext-ed25519-public AAAA\n".utf8))
        XCTAssertEqual(SigningKeys.loadTrustedKeys(directory: f.keysDir).count, 1)
    }
}

final class NamesAndCertificatesTests: XCTestCase {
    func testDownloadNamesAreSanitised() {
        XCTAssertEqual(NetworkCommands.safeFileName(fromURL: "http://h:8001/dir/test.txt?x=1#y"), "test.txt")
        XCTAssertEqual(NetworkCommands.safeFileName(fromURL: "http://h/a/..%2F..%2Fetc%2Fpasswd"), "_2F.._2Fetc_2Fpasswd")
        XCTAssertEqual(NetworkCommands.safeFileName(fromURL: "http://h/../../.bashrc"), "bashrc")
        XCTAssertEqual(NetworkCommands.safeFileName(fromURL: "http://h/"), "download")
        XCTAssertEqual(NetworkCommands.safeFileName(fromURL: "http://h"), "download")
        XCTAssertEqual(NetworkCommands.safeFileName(fromURL: "https://h/x y;rm -rf.bin"), "x_y_rm_-rf.bin")
        XCTAssertLessThanOrEqual(NetworkCommands.safeFileName(fromURL: "http://h/" + String(repeating: "a", count: 500)).count, 100)
    }

    func testCertificateNamesCannotEscapeTheFolder() throws {
        let f = try Fixture()
        let store = CertificateStore(directory: f.root)
        try f.write(f.root + "/ca_cert.pem", [1])
        XCTAssertEqual(try store.trust(for: "https://h/x", cert: nil), .caFile(f.root + "/ca_cert.pem"))
        XCTAssertEqual(try store.trust(for: "https://h/x", cert: "system"), .system)
        XCTAssertNil(try store.trust(for: "http://h/x", cert: "missing.pem")) // http ignores the cert
        XCTAssertRefused("cert_missing", try store.trust(for: "https://h/x", cert: "missing.pem"))
        for evil in ["../ca_cert.pem", "/etc/ssl/cert.pem", "..", ".hidden", "a/b.pem"] {
            XCTAssertRefused("bad_cert", try store.trust(for: "https://h/x", cert: evil))
        }
        for bad in ["ftp://h/x", "file:///etc/passwd", "http://h/a b", "", "https://"] {
            XCTAssertRefused("bad_uri", try store.trust(for: bad, cert: nil))
        }
    }
}

final class LauncherTests: XCTestCase {
    func testNoInstalledUpdateRunsThePackagedBinary() throws {
        let f = try Fixture()
        guard case .runSelf = UpdateLauncher.prepare(stateDirectory: f.stateDir, launchedSlot: nil) else {
            return XCTFail("expected runSelf")
        }
    }

    func testAnExecdSlotNeverLaunchesAgain() throws {
        let f = try Fixture()
        try f.installOnTrial("2.0")
        XCTAssertEqual(UpdateLauncher.prepare(stateDirectory: f.stateDir, launchedSlot: "2.0-x"),
                       .runSelf(reason: "started from slot 2.0-x"))
        XCTAssertEqual(f.slots.readTrial()?.attempts, 0, "the guard must not count attempts")
    }

    func testHealthyNewVersionIsCommittedAndTheOldOneKept() throws {
        let f = try Fixture()
        let v1 = try f.installCommitted("1.0")
        let v2 = try f.installOnTrial("2.0")
        XCTAssertEqual(f.slots.currentSlot, v2)
        XCTAssertEqual(f.slots.previousSlot, v1)
        XCTAssertFalse(try UpdateLauncher.markHealthy(stateDirectory: f.stateDir, runningSlot: v1),
                       "only the slot on trial can commit itself")
        XCTAssertEqual(UpdateLauncher.prepare(stateDirectory: f.stateDir, launchedSlot: nil),
                       .exec(slot: v2, path: f.slots.layout.binaryPath(v2), trialAttempt: 1))
        XCTAssertTrue(try UpdateLauncher.markHealthy(stateDirectory: f.stateDir, runningSlot: v2))
        XCTAssertNil(f.slots.readTrial())
        XCTAssertEqual(f.slots.readResult()?.result, "committed")
        XCTAssertEqual(UpdateLauncher.prepare(stateDirectory: f.stateDir, launchedSlot: nil),
                       .exec(slot: v2, path: f.slots.layout.binaryPath(v2), trialAttempt: nil))
        XCTAssertNotNil(f.slots.manifest(v1), "the previous version stays installed")
        XCTAssertRefused("trial_running", try {
            let v3 = try f.slots.install(try UpdateImage.verify(path: try f.image("3.0"), policy: f.policy))
            _ = try f.slots.beginTrial(slot: v3, maxAttempts: 3, healthSeconds: 60)
            _ = try f.slots.beginTrial(slot: try f.slots.install(try UpdateImage.verify(path: try f.image("4.0"), policy: f.policy)),
                                       maxAttempts: 3, healthSeconds: 60)
        }())
    }

    func testCrashLoopingVersionIsRolledBackAfterItsAttempts() throws {
        let f = try Fixture()
        let v1 = try f.installCommitted("1.0")
        let v2 = try f.installOnTrial("2.0", maxAttempts: 3)
        for attempt in 1...3 { // each start "crashes": nobody calls markHealthy
            XCTAssertEqual(UpdateLauncher.prepare(stateDirectory: f.stateDir, launchedSlot: nil),
                           .exec(slot: v2, path: f.slots.layout.binaryPath(v2), trialAttempt: attempt))
        }
        XCTAssertEqual(UpdateLauncher.prepare(stateDirectory: f.stateDir, launchedSlot: nil),
                       .exec(slot: v1, path: f.slots.layout.binaryPath(v1), trialAttempt: nil))
        XCTAssertEqual(f.slots.currentSlot, v1)
        XCTAssertNil(f.slots.readTrial())
        XCTAssertEqual(f.slots.readResult()?.result, "rolled_back")
        XCTAssertEqual(f.slots.readResult()?.slot, v2)
        let updater = FirmwareUpdater(configuration: UpdateConfiguration(stateDirectory: f.stateDir), runningSlot: v1)
        XCTAssertEqual(updater.status().lastError?.code, "rolled_back", "field staff see why the update went away")
    }

    func testFirstUpdateThatNeverWorksFallsBackToThePackagedBinary() throws {
        let f = try Fixture()
        try f.installOnTrial("2.0", maxAttempts: 1)
        _ = UpdateLauncher.prepare(stateDirectory: f.stateDir, launchedSlot: nil)
        guard case .runSelf = UpdateLauncher.prepare(stateDirectory: f.stateDir, launchedSlot: nil) else {
            return XCTFail("expected the packaged binary")
        }
        XCTAssertNil(f.slots.currentSlot)
    }

    func testVersionThatRunsButNeverBecomesHealthyRevertsItself() throws {
        let f = try Fixture()
        let v1 = try f.installCommitted("1.0")
        let v2 = try f.installOnTrial("2.0")
        _ = UpdateLauncher.prepare(stateDirectory: f.stateDir, launchedSlot: nil)
        XCTAssertEqual(UpdateLauncher.trialHealthDeadline(stateDirectory: f.stateDir, runningSlot: v2), .seconds(60))
        XCTAssertNil(UpdateLauncher.trialHealthDeadline(stateDirectory: f.stateDir, runningSlot: v1))
        XCTAssertFalse(UpdateLauncher.revertUnhealthyTrial(stateDirectory: f.stateDir, runningSlot: v1))
        XCTAssertTrue(UpdateLauncher.revertUnhealthyTrial(stateDirectory: f.stateDir, runningSlot: v2))
        XCTAssertEqual(f.slots.currentSlot, v1)
        XCTAssertNil(UpdateLauncher.trialHealthDeadline(stateDirectory: f.stateDir, runningSlot: v2))
    }

    func testTrialLeftOverFromAnInterruptedSwitchIsIgnored() throws {
        let f = try Fixture()
        let v1 = try f.installCommitted("1.0")
        // Power lost after trial.json was written but before `current` was switched:
        let v2 = try f.slots.install(try UpdateImage.verify(path: try f.image("2.0"), policy: f.policy))
        let record = TrialRecord(slot: v2, previous: v1, attempts: 0, maxAttempts: 3, healthSeconds: 60, startedAt: 0)
        try f.write(f.slots.layout.trialFile, Array(try JSONEncoder().encode(record)))
        XCTAssertEqual(UpdateLauncher.prepare(stateDirectory: f.stateDir, launchedSlot: nil),
                       .exec(slot: v1, path: f.slots.layout.binaryPath(v1), trialAttempt: nil))
        XCTAssertNil(f.slots.readTrial())
    }

    func testDamagedBinariesAreNeverStarted() throws {
        let f = try Fixture()
        let v1 = try f.installCommitted("1.0")
        let v2 = try f.installCommitted("2.0")
        // Committed slot cut short (storage damage): size check catches it, previous is started.
        truncate(f.slots.layout.binaryPath(v2), 3)
        XCTAssertEqual(UpdateLauncher.prepare(stateDirectory: f.stateDir, launchedSlot: nil),
                       .exec(slot: v1, path: f.slots.layout.binaryPath(v1), trialAttempt: nil))
        XCTAssertEqual(f.slots.readResult()?.result, "fell_back")
        // A slot on trial is hash-checked before its first start: same size, one byte changed.
        let v3 = try f.installOnTrial("3.0")
        var bytes = f.read(f.slots.layout.binaryPath(v3))!
        bytes[bytes.count - 2] ^= 1
        try f.write(f.slots.layout.binaryPath(v3), bytes, mode: 0o755)
        XCTAssertEqual(UpdateLauncher.prepare(stateDirectory: f.stateDir, launchedSlot: nil),
                       .exec(slot: v1, path: f.slots.layout.binaryPath(v1), trialAttempt: nil))
        XCTAssertEqual(f.slots.readResult()?.slot, v3)
    }

    func testUpdatesNeverTouchOtherStateFiles() throws {
        let f = try Fixture()
        let config = Array("{\"version\":7,\"wifi\":{\"ssid\":\"x\"}}".utf8)
        try f.write(f.stateDir + "/config.json", config)
        let v1 = try f.installCommitted("1.0")
        try f.installOnTrial("2.0")
        for _ in 0..<4 { _ = UpdateLauncher.prepare(stateDirectory: f.stateDir, launchedSlot: nil) }
        XCTAssertEqual(f.slots.currentSlot, v1)
        XCTAssertEqual(f.read(f.stateDir + "/config.json"), config)
        XCTAssertEqual(Set(FileIOProbe.list(f.stateDir)), ["config.json", "firmware"])
    }
}

enum FileIOProbe {
    static func list(_ path: String) -> [String] {
        guard let dir = opendir(path) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let e = readdir(dir) {
            let name = withUnsafePointer(to: e.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }
}

final class FirmwareUpdaterTests: XCTestCase {
    /// A TCP listener that never answers: the kernel accepts the connection, nothing is ever sent back.
    func silentServer() -> (fd: Int32, port: UInt16) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) }
        }
        listen(fd, 8)
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        return (fd, UInt16(bigEndian: addr.sin_port))
    }

    func testStalledDownloadIsAbortedAndASecondUpdateIsBusyMeanwhile() throws {
        let f = try Fixture()
        let server = silentServer()
        defer { close(server.fd) }
        let installed = Mutex(0)
        var config = UpdateConfiguration(stateDirectory: f.stateDir, keysDirectory: f.keysDir,
                                         lowSpeedBytesPerSecond: 1, lowSpeedSeconds: 1,
                                         onInstalled: { _ in installed.withLock { $0 += 1 } })
        config.outgoingPolicy = .unrestricted // the silent server is on loopback
        let updater = FirmwareUpdater(configuration: config, runningSlot: nil)
        let url = "http://127.0.0.1:\(server.port)/fw.img"
        XCTAssertEqual(try updater.startUpdate(firmwareURI: url, cert: nil).get().state, UpdateState.downloading)
        XCTAssertEqual(updater.status().state, UpdateState.downloading)
        XCTAssertEqual(errorCode(updater.startUpdate(firmwareURI: url, cert: nil)), "busy")
        XCTAssertEqual(errorCode(updater.installUploadedImage(f.read(try f.image("1.0"))!)), "busy")
        let final = updater.waitUntilSettled(timeoutSeconds: 20)
        XCTAssertEqual(final.state, .failed)
        XCTAssertEqual(final.lastError?.code, "stalled")
        XCTAssertNil(f.slots.currentSlot)
        XCTAssertEqual(installed.withLock { $0 }, 0)
    }

    func testUploadedImageIsInstalledAndSwitchedAndOTATextMatchesTheManual() throws {
        let f = try Fixture()
        let installed = Mutex<[String]>([])
        let config = UpdateConfiguration(stateDirectory: f.stateDir, keysDirectory: f.keysDir,
                                         onInstalled: { slot in installed.withLock { $0.append(slot) } })
        let updater = FirmwareUpdater(configuration: config, runningSlot: nil)
        let bad = updater.installUploadedImage(f.read(try f.image("1.0", arch: "armv7"))!)
        XCTAssertEqual(errorCode(bad), "wrong_architecture")
        XCTAssertTrue(OTAPage.replyText(for: bad).hasPrefix("Update_Failed: the image is for armv7"))
        XCTAssertEqual(updater.status().state, .failed)
        XCTAssertNil(f.slots.currentSlot)
        let good = updater.installUploadedImage(f.read(try f.image("1.0"))!)
        XCTAssertEqual(OTAPage.replyText(for: good), "Update_Success!_Rebooting...")
        let slot = try good.get().slot
        XCTAssertEqual(f.slots.currentSlot, slot)
        XCTAssertEqual(installed.withLock { $0 }, [slot])
        XCTAssertEqual(updater.status().state, .installed)
        XCTAssertEqual(FileIOProbe.list(f.slots.layout.incomingDirectory), [], "verified images are not kept")
        XCTAssertTrue(OTAPage.html.contains("action=\"/ota\""))
    }

    func testOlderThanTheCommittedVersionIsRefusedUnlessAllowed() throws {
        let f = try Fixture()
        var config = UpdateConfiguration(stateDirectory: f.stateDir, keysDirectory: f.keysDir)
        config.packagedVersion = "1.0"
        let updater = FirmwareUpdater(configuration: config, runningSlot: nil)
        XCTAssertEqual(errorCode(updater.installUploadedImage(f.read(try f.image("0.9"))!)), "downgrade")
        XCTAssertNil(f.slots.currentSlot)
        let two = try updater.installUploadedImage(f.read(try f.image("2.0"))!).get().slot
        XCTAssertTrue(try f.slots.commit(runningSlot: two))
        // Committed 2.0 now outranks the packaged 1.0.
        let fresh = FirmwareUpdater(configuration: config, runningSlot: two)
        XCTAssertEqual(errorCode(fresh.installUploadedImage(f.read(try f.image("1.5"))!)), "downgrade")
        XCTAssertEqual(f.slots.currentSlot, two)
        config.allowDowngrade = true
        let allowed = FirmwareUpdater(configuration: config, runningSlot: two)
        XCTAssertTrue(try allowed.installUploadedImage(f.read(try f.image("1.5"))!).get().slot.hasPrefix("1.5-"))
    }
}
