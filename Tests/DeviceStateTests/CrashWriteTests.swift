import Platform
import FoundationEssentials
import Glibc
import XCTest

@testable import DeviceState

/// The two configurations the crash writer alternates between. Large enough that a
/// write takes more than one page and a torn file would be visible.
let crashVersions: [WiFiClientConfig] = [
    WiFiClientConfig(ssid: "alpha", password: Secret(String(repeating: "a", count: 63)), mode: .sta),
    WiFiClientConfig(ssid: "beta-network", password: Secret(String(repeating: "b", count: 20)), mode: .staAP),
]

/// Runs only when re-launched by `CrashWriteTests` with CRASH_WRITER_DIR set: writes the
/// two versions alternately, forever, until it is SIGKILLed.
final class CrashWriterHelper: XCTestCase {
    func testWriterLoop() throws {
        guard let dir = getenv("CRASH_WRITER_DIR").map({ String(cString: $0) }) else {
            throw XCTSkip("helper for CrashWriteTests; runs only in a child process")
        }
        let store = try StateStore(directory: dir)
        try store.updateConfig { $0.meterKey = Secret(String(repeating: "k", count: 3000)) }
        try writeText("x", to: dir + "/started")
        var i = 0
        while true {
            try store.updateConfig { $0.wifi = crashVersions[i % 2] }
            try store.updateState { $0.startCount = i }
            i += 1
        }
    }
}

final class CrashWriteTests: XCTestCase {
    func testSIGKILLDuringWritesNeverLeavesATornFile() throws {
        let dir = makeTemporaryDirectory(self)
        let iterations = Int(getenv("CRASH_ITERATIONS").map { String(cString: $0) } ?? "") ?? 200
        var sawOld = 0, sawNew = 0
        for round in 0..<iterations {
            unlink(dir + "/started")
            let pid = try spawnWriter(dir: dir)
            let deadline = MonotonicClock.nowSeconds() + 30
            while access(dir + "/started", F_OK) != 0 {
                XCTAssert(MonotonicClock.nowSeconds() < deadline, "writer did not start")
                if MonotonicClock.nowSeconds() >= deadline { kill(pid, SIGKILL); return }
                usleep(1000)
            }
            usleep(UInt32.random(in: 0...8000))
            kill(pid, SIGKILL)
            var status: Int32 = 0
            while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
            XCTAssertEqual(status & 0x7f, SIGKILL, "round \(round): the writer ended before it was killed")

            // Read the files exactly as written, without the store's set-aside repair.
            let configBytes = try XCTUnwrap(try AtomicFile.read(dir + "/config.json"), "round \(round)")
            let config: DeviceConfig
            do {
                config = try JSONDecoder().decode(DeviceConfig.self, from: Data(configBytes))
            } catch {
                XCTFail("round \(round): torn config file: \(String(decoding: configBytes, as: UTF8.self).suffix(200))")
                return
            }
            XCTAssertEqual(config.meterKey?.revealed.count, 3000)
            if let wifi = config.wifi {
                XCTAssertTrue(crashVersions.contains(wifi), "round \(round): unexpected \(wifi)")
                if wifi == crashVersions[0] { sawOld += 1 } else { sawNew += 1 }
            }
            let stateBytes = try XCTUnwrap(try AtomicFile.read(dir + "/state.json"))
            XCTAssertNoThrow(
                try JSONDecoder().decode(DeviceRuntimeState.self, from: Data(stateBytes)), "round \(round): torn state")
            // And the store itself loads without having to set anything aside.
            XCTAssertEqual(try StateStore(directory: dir).loadWarnings, [], "round \(round)")
        }
        // The kills must have landed at different points of the loop for the test to mean anything.
        XCTAssertGreaterThan(sawOld, 0)
        XCTAssertGreaterThan(sawNew, 0)
    }

    /// Re-launches this test binary running only `CrashWriterHelper/testWriterLoop`
    /// (swift-corelibs-xctest takes `Module.Class/method` as its positional filter).
    func spawnWriter(dir: String) throws -> pid_t {
        let exe = try XCTUnwrap(realpathString("/proc/self/exe"))
        let args = [exe, "DeviceStateTests.CrashWriterHelper/testWriterLoop"]
        let env = Subprocess.currentEnvironment().filter { !$0.hasPrefix("CRASH_WRITER_DIR=") } + ["CRASH_WRITER_DIR=\(dir)"]
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        let argv = args.map { strdup($0) } + [nil]
        let envp = env.map { strdup($0) } + [nil]
        defer { (argv + envp).forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, exe, &actions, nil, argv, envp)
        guard rc == 0 else { throw SystemError("posix_spawn", path: exe, errno: rc) }
        return pid
    }

    func realpathString(_ path: String) -> String? {
        guard let p = realpath(path, nil) else { return nil }
        defer { free(p) }
        return String(cString: p)
    }
}
