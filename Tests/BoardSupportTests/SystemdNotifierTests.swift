import Glibc
import XCTest
@testable import BoardSupport

/// A real AF_UNIX datagram socket standing in for systemd's notify socket.
final class NotifySocket {
    let fd: Int32
    let name: String  // as it would appear in $NOTIFY_SOCKET
    private let path: String?

    init(abstract: Bool) {
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        precondition(fd >= 0)
        let unique = "meterext-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array((abstract ? "@" + unique : "/tmp/" + unique + ".sock").utf8)
        name = String(decoding: bytes, as: UTF8.self)
        path = abstract ? nil : name
        if abstract { bytes[0] = 0 }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let length = socklen_t(MemoryLayout<sockaddr_un>.offset(of: \.sun_path)! + bytes.count + (abstract ? 0 : 1))
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        precondition(rc == 0, "bind: \(String(cString: strerror(errno)))")
    }

    /// The next datagram, or nil when none is queued.
    func receive() -> String? {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = recv(fd, &buffer, buffer.count, 0)
        return n < 0 ? nil : String(decoding: buffer[0..<n], as: UTF8.self)
    }

    deinit {
        close(fd)
        if let path { unlink(path) }
    }
}

final class SystemdNotifierTests: XCTestCase {
    func testMessagesArriveOnAFilesystemSocket() throws {
        let socket = NotifySocket(abstract: false)
        let notifier = SystemdNotifier(socketPath: socket.name, watchdogTimeout: nil)
        try notifier.ready(status: "polling /dev/ttyAMA0")
        XCTAssertEqual(socket.receive(), "READY=1\nSTATUS=polling /dev/ttyAMA0")
        try notifier.status("meter offline\nretrying")
        XCTAssertEqual(socket.receive(), "STATUS=meter offline retrying")
        try notifier.watchdog()
        XCTAssertEqual(socket.receive(), "WATCHDOG=1")
        try notifier.stopping()
        XCTAssertEqual(socket.receive(), "STOPPING=1")
        XCTAssertNil(socket.receive())
    }

    func testMessagesArriveOnAnAbstractSocket() throws {
        let socket = NotifySocket(abstract: true)
        XCTAssertTrue(socket.name.hasPrefix("@"))
        try SystemdNotifier(socketPath: socket.name, watchdogTimeout: nil).ready()
        XCTAssertEqual(socket.receive(), "READY=1")
    }

    func testMissingSocketIsAnErrorNamingIt() {
        let notifier = SystemdNotifier(socketPath: "/tmp/no-such-notify-socket", watchdogTimeout: nil)
        XCTAssertThrowsError(try notifier.ready()) { error in
            XCTAssertEqual(error as? NotifyError, NotifyError(operation: "sendto /tmp/no-such-notify-socket", errno: ENOENT))
        }
    }

    func testWithoutSystemdEverythingIsANoOp() throws {
        let notifier = SystemdNotifier(environment: { _ in nil })
        XCTAssertFalse(notifier.isActive)
        XCTAssertNil(notifier.watchdogTimeout)
        try notifier.ready()
        try notifier.watchdog()
    }

    func testWatchdogSettingsFromEnvironment() {
        let env = ["NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"]
        let mine = SystemdNotifier(environment: { env[$0] }, pid: 42)
        XCTAssertEqual(mine.watchdogTimeout, .seconds(30))
        XCTAssertEqual(mine.watchdogPingInterval, .seconds(15))
        // The watchdog belongs to another process (e.g. a wrapper that exec'd us with a stale environment).
        XCTAssertNil(SystemdNotifier(environment: { env[$0] }, pid: 43).watchdogTimeout)
        let noPid = env.filter { $0.key != "WATCHDOG_PID" }
        XCTAssertEqual(SystemdNotifier(environment: { noPid[$0] }, pid: 43).watchdogTimeout, .seconds(30))
        let zero = ["WATCHDOG_USEC": "0"]
        XCTAssertNil(SystemdNotifier(environment: { zero[$0] }).watchdogTimeout)
    }

    func testWatchdogPingOnlyWhenEverySubsystemIsAlive() throws {
        let socket = NotifySocket(abstract: false)
        let notifier = SystemdNotifier(socketPath: socket.name, watchdogTimeout: .seconds(30))
        let clock = ManualClock()
        let gate = WatchdogGate(subsystems: [.pollLoop, .http], staleAfter: .seconds(30), now: clock.now)

        XCTAssertEqual(try notifier.watchdogIfHealthy(gate), [.http, .pollLoop])
        XCTAssertNil(socket.receive(), "nothing may be sent before every subsystem has beaten")

        gate.beat(.pollLoop)
        gate.beat(.http)
        XCTAssertEqual(try notifier.watchdogIfHealthy(gate), [])
        XCTAssertEqual(socket.receive(), "WATCHDOG=1")

        clock.advance(.seconds(20))
        gate.beat(.http)  // the poll loop hangs from here on
        clock.advance(.seconds(11))
        XCTAssertEqual(try notifier.watchdogIfHealthy(gate), [.pollLoop])
        XCTAssertNil(socket.receive())
    }
}

final class WatchdogGateTests: XCTestCase {
    func testStalenessBoundaryAndUnregisteredBeats() {
        let clock = ManualClock()
        let gate = WatchdogGate(subsystems: [.pollLoop, .http], staleAfter: .seconds(10), now: clock.now)
        XCTAssertFalse(gate.isHealthy)
        gate.beat(.pollLoop)
        gate.beat(WatchdogGate.Subsystem("unregistered"))
        XCTAssertEqual(gate.staleSubsystems(), [.http])
        gate.beat(.http)
        XCTAssertTrue(gate.isHealthy)
        clock.advance(.seconds(10))
        XCTAssertTrue(gate.isHealthy, "exactly staleAfter old still counts as alive")
        clock.advance(.milliseconds(1))
        XCTAssertEqual(gate.staleSubsystems(), [.http, .pollLoop])
        gate.beat(.pollLoop)
        XCTAssertEqual(gate.staleSubsystems(), [.http])
    }
}
