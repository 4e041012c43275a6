import Glibc
import XCTest

@testable import DeviceState

/// Issue 12, item 4: root (the CLI) writing the service's files keeps their owner and mode.
final class OwnershipTests: XCTestCase {
    func owner(_ path: String) -> (uid: uid_t, gid: gid_t, mode: mode_t) {
        var st = stat()
        XCTAssertEqual(stat(path, &st), 0)
        return (st.st_uid, st.st_gid, st.st_mode & 0o7777)
    }

    func testReplacingAFileKeepsItsOwnerAndMode() throws {
        try XCTSkipUnless(geteuid() == 0, "changing owners needs root")
        let dir = makeTemporaryDirectory(self)
        let path = try StateStore(directory: dir).configPath
        XCTAssertEqual(chown(path, 65534, 65534), 0)
        XCTAssertEqual(chmod(path, 0o640), 0)
        let store = try StateStore(directory: dir) // as `sudo meterext token --require off` with the service stopped
        try store.updateConfig { $0.tokenRequired = false }
        let o = owner(path)
        XCTAssertEqual([o.uid, o.gid], [65534, 65534])
        XCTAssertEqual(o.mode, 0o640)
        XCTAssertEqual(try StateStore.readConfig(directory: dir)?.tokenRequired, false)
    }

    func testANewFileWrittenByRootTakesTheDirectorysOwner() throws {
        try XCTSkipUnless(geteuid() == 0, "changing owners needs root")
        let dir = makeTemporaryDirectory(self)
        XCTAssertEqual(chown(dir, 65534, 65534), 0)
        let store = try StateStore(directory: dir)
        try store.updateConfig { $0.tokenRequired = false }
        for path in [store.configPath, store.statePath] {
            let o = owner(path)
            XCTAssertEqual([o.uid, o.gid], [65534, 65534], path)
            XCTAssertEqual(o.mode, 0o600)
        }
    }

    func testTheServiceLockTellsWhetherTheServiceRunsAndWhere() throws {
        let dir = makeTemporaryDirectory(self)
        XCTAssertNil(ServiceLock.running(directory: dir))
        var lock: ServiceLock? = try ServiceLock.acquire(directory: dir)
        XCTAssertEqual(ServiceLock.running(directory: dir)?.pid, getpid())
        XCTAssertNil(ServiceLock.running(directory: dir)?.endpoint, "not bound yet")
        try lock!.publish(ServiceLock.Info(pid: getpid(), host: "127.0.0.1", port: 8080))
        XCTAssertEqual(ServiceLock.running(directory: dir)?.endpoint, "127.0.0.1:8080")
        XCTAssertThrowsError(try ServiceLock.acquire(directory: dir)) { XCTAssertTrue($0 is ServiceLock.Held) }
        lock = nil
        XCTAssertNil(ServiceLock.running(directory: dir))
    }
}
