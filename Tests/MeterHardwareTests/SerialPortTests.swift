import Platform
import Foundation
import Glibc
import ModbusCore
import XCTest

@testable import MeterHardware

final class SerialPortTests: XCTestCase {
    private func attributes(_ fd: Int32) throws -> termios {
        var t = termios()
        guard tcgetattr(fd, &t) == 0 else {
            throw SystemError(operation: "tcgetattr (test)", errno: Glibc.errno)
        }
        return t
    }

    private func controlChar(_ t: termios, _ index: Int32) -> UInt8 {
        withUnsafeBytes(of: t.c_cc) { $0[Int(index)] }
    }

    func testRawModeIsAppliedOnAPty() throws {
        let pty = try PTYPair()
        // Dirty the line first, so the test sees SerialPort clear every flag rather than inherit a clean pty.
        var dirty = try attributes(pty.masterFD)
        dirty.c_iflag |= tcflag_t(ICRNL | IXON | IXOFF | INLCR | IGNCR | ISTRIP)
        dirty.c_oflag |= tcflag_t(OPOST | ONLCR)
        dirty.c_lflag |= tcflag_t(ICANON | ECHO | ISIG | IEXTEN)
        withUnsafeMutableBytes(of: &dirty.c_cc) {
            $0[Int(VMIN)] = 1
            $0[Int(VTIME)] = 5
        }
        XCTAssertEqual(tcsetattr(pty.masterFD, TCSANOW, &dirty), 0)

        let port = try SerialPort(path: pty.slavePath, line: LineSettings(baud: 9600, parity: .none))
        XCTAssertTrue(port.isPseudoTerminal)
        var t = try attributes(port.fileDescriptor)
        XCTAssertEqual(t.c_iflag & tcflag_t(ICRNL | IXON | IXOFF | IXANY | INLCR | IGNCR | ISTRIP | IGNPAR | INPCK), 0)
        XCTAssertEqual(t.c_oflag & tcflag_t(OPOST), 0)
        XCTAssertEqual(t.c_lflag & tcflag_t(ICANON | ECHO | ECHONL | ISIG | IEXTEN), 0)
        XCTAssertEqual(t.c_cflag & tcflag_t(CSIZE), tcflag_t(CS8))
        XCTAssertEqual(t.c_cflag & tcflag_t(PARENB | CSTOPB), 0)
        XCTAssertEqual(t.c_cflag & tcflag_t(CRTSCTS), 0)
        XCTAssertEqual(t.c_cflag & tcflag_t(CLOCAL | CREAD), tcflag_t(CLOCAL | CREAD))
        XCTAssertEqual(controlChar(t, VMIN), 0)
        XCTAssertEqual(controlChar(t, VTIME), 0)
        XCTAssertEqual(cfgetospeed(&t), speed_t(B9600))
        XCTAssertEqual(SerialPort.describe(t), "9600 8N1")
    }

    func testEverySupportedBaudIsAppliedAndReadBack() throws {
        let pty = try PTYPair()
        let expected: [Int: Int32] = [
            1200: B1200, 2400: B2400, 4800: B4800, 9600: B9600, 19200: B19200, 38400: B38400, 57600: B57600,
            115200: B115200,
        ]
        XCTAssertEqual(Set(SerialPort.supportedBaudRates), Set(expected.keys))
        for baud in SerialPort.supportedBaudRates {
            let port = try SerialPort(path: pty.slavePath, line: LineSettings(baud: baud, parity: .none))
            var t = try attributes(port.fileDescriptor)
            XCTAssertEqual(cfgetospeed(&t), speed_t(expected[baud]!), "output speed for \(baud)")
            let input = cfgetispeed(&t)
            XCTAssertTrue(input == speed_t(expected[baud]!) || input == 0, "input speed for \(baud)")
        }
    }

    func testTwoStopBitsSetCSTOPB() throws {
        let pty = try PTYPair()
        let port = try SerialPort(path: pty.slavePath, line: LineSettings(baud: 19200, parity: .none, stopBits: 2))
        let t = try attributes(port.fileDescriptor)
        XCTAssertEqual(t.c_cflag & tcflag_t(CSTOPB), tcflag_t(CSTOPB))
    }

    func testRawSettingsAskForParityWithInputCheck() {
        // What a real UART is asked for (a pty can't show it: this kernel refuses PARENB on ptys).
        let even = SerialPort.rawSettings(from: termios(), line: .meterDefault, speed: speed_t(B9600))
        XCTAssertEqual(even.c_cflag & tcflag_t(PARENB | PARODD), tcflag_t(PARENB))
        XCTAssertEqual(even.c_iflag & tcflag_t(INPCK | IGNPAR | PARMRK), tcflag_t(INPCK))
        XCTAssertEqual(SerialPort.describe(even), "9600 8E1")
        let odd = SerialPort.rawSettings(
            from: termios(), line: LineSettings(baud: 4800, parity: .odd), speed: speed_t(B4800))
        XCTAssertEqual(odd.c_cflag & tcflag_t(PARENB | PARODD), tcflag_t(PARENB | PARODD))
        XCTAssertEqual(SerialPort.describe(odd), "4800 8O1")
        let none = SerialPort.rawSettings(
            from: even, line: LineSettings(baud: 1200, parity: .none), speed: speed_t(B1200))
        XCTAssertEqual(none.c_cflag & tcflag_t(PARENB | PARODD), 0)
        XCTAssertEqual(none.c_iflag & tcflag_t(INPCK), 0)
    }

    func testParityOnAPtyFailsClearly() throws {
        let pty = try PTYPair()
        for parity in [LineSettings.Parity.even, .odd] {
            XCTAssertThrowsError(try SerialPort(path: pty.slavePath, line: LineSettings(baud: 9600, parity: parity))) {
                error in
                let text = String(describing: error)
                XCTAssertTrue(text.contains(pty.slavePath), text)
                XCTAssertTrue(text.contains("ptys can't do parity"), text)
                XCTAssertTrue(text.contains("--parity none"), text)
            }
        }
    }

    func testOpeningAMissingDeviceNamesItAndHints() {
        XCTAssertThrowsError(try SerialPort(path: "/dev/ttyMETEREXT-missing", line: .meterDefault)) { error in
            guard let error = error as? SystemError else { return XCTFail("not a SystemError: \(error)") }
            XCTAssertEqual(error.operation, "open")
            XCTAssertEqual(error.errno, ENOENT)
            XCTAssertEqual(error.path, "/dev/ttyMETEREXT-missing")
            XCTAssertTrue(
                error.description.hasPrefix(
                    "open /dev/ttyMETEREXT-missing: No such file or directory (errno 2) — no such device"),
                error.description)
        }
    }

    func testOpeningSomethingThatIsNotATtyFails() {
        XCTAssertThrowsError(try SerialPort(path: "/dev/null", line: .meterDefault)) { error in
            let text = String(describing: error)
            XCTAssertTrue(text.hasPrefix("tcgetattr /dev/null: "), text)
            XCTAssertTrue(text.contains("not a serial port"), text)
        }
    }

    func testUnsupportedFormatsAreRefusedBeforeOpening() {
        XCTAssertThrowsError(try SerialPort(path: "/dev/null", line: LineSettings(baud: 14400, parity: .none))) {
            XCTAssertTrue(String(describing: $0).contains("14400 baud is not supported"), "\($0)")
        }
        XCTAssertThrowsError(try SerialPort(path: "/dev/null", line: LineSettings(baud: 9600, parity: .none, stopBits: 3))) {
            XCTAssertTrue(String(describing: $0).contains("3 stop bits"), "\($0)")
        }
    }

    func testSystemErrorReadsAsPlainLanguage() {
        let error = SystemError(operation: "open", errno: EACCES, path: "/dev/ttyAMA0").withInstallerHint()
        XCTAssertEqual(
            error.description,
            "open /dev/ttyAMA0: Permission denied (errno 13) — is the user in the dialout group?")
        let noErrno = SystemError(operation: "configure", errno: 0, path: "/dev/ttyS0", detail: "parity dropped")
        XCTAssertEqual(noErrno.description, "configure /dev/ttyS0: parity dropped")
    }

    func testBytesRoundTripThroughAPtyPair() throws {
        let pty = try PTYPair()
        let port = try SerialPort(path: pty.slavePath, line: LineSettings(baud: 9600, parity: .none))
        // Every byte value, including the ones a cooked tty would translate or swallow (CR, LF, XON, XOFF, ^C).
        let request: [UInt8] = Array(0...255)
        try request.withUnsafeBytes { XCTAssertEqual(try port.write($0), 256) }
        XCTAssertEqual(try readExactly(256) { try pty.readMaster(into: $0, timeoutNanos: $1) }, request)

        let reply: [UInt8] = [0x01, 0x03, 0x02, 0x0D, 0x0A, 0x11, 0x13, 0x03, 0x00, 0xFF]
        try reply.withUnsafeBytes { XCTAssertEqual(try pty.writeMaster($0), reply.count) }
        XCTAssertEqual(try readExactly(reply.count) { try port.read(into: $0, timeoutNanos: $1) }, reply)
    }

    func testReadTimesOutWithZeroAfterAboutTheTimeout() throws {
        let pty = try PTYPair()
        let port = try SerialPort(path: pty.slavePath, line: LineSettings(baud: 9600, parity: .none))
        var buffer = [UInt8](repeating: 0, count: 16)
        let timeout: UInt64 = 30_000_000
        let start = MonotonicClock.nowNanos()
        let n = try buffer.withUnsafeMutableBytes { try port.read(into: $0, timeoutNanos: timeout) }
        let elapsed = MonotonicClock.nowNanos() - start
        XCTAssertEqual(n, 0)
        XCTAssertGreaterThanOrEqual(elapsed, timeout * 9 / 10, "returned after \(elapsed) ns")
        // A zero timeout only takes what is there.
        XCTAssertEqual(try buffer.withUnsafeMutableBytes { try port.read(into: $0, timeoutNanos: 0) }, 0)
    }

    func testReadReturnsAsSoonAsDataArrives() throws {
        let pty = try PTYPair()
        let port = try SerialPort(path: pty.slavePath, line: LineSettings(baud: 9600, parity: .none))
        try [UInt8]([0x42]).withUnsafeBytes { _ = try pty.writeMaster($0) }
        var buffer = [UInt8](repeating: 0, count: 16)
        let start = MonotonicClock.nowNanos()
        let n = try buffer.withUnsafeMutableBytes { try port.read(into: $0, timeoutNanos: 5_000_000_000) }
        XCTAssertEqual(n, 1)
        XCTAssertEqual(buffer[0], 0x42)
        XCTAssertLessThan(MonotonicClock.nowNanos() - start, 2_000_000_000)
    }

    func testFlushInputDiscardsPendingBytes() throws {
        let pty = try PTYPair()
        let port = try SerialPort(path: pty.slavePath, line: LineSettings(baud: 9600, parity: .none))
        try [UInt8](repeating: 0xAA, count: 10).withUnsafeBytes { _ = try pty.writeMaster($0) }
        MonotonicClock.sleep(nanos: 20_000_000)  // let the pty move the bytes to the slave's input queue
        try port.flushInput()
        var buffer = [UInt8](repeating: 0, count: 16)
        XCTAssertEqual(try buffer.withUnsafeMutableBytes { try port.read(into: $0, timeoutNanos: 20_000_000) }, 0)
    }

    func testPtyHasNoLineStatusRTSOrKernelRS485() throws {
        let pty = try PTYPair()
        let port = try SerialPort(path: pty.slavePath, line: LineSettings(baud: 9600, parity: .none))
        XCTAssertNil(port.transmitterEmpty())
        XCTAssertNoThrow(try port.drain())
        XCTAssertThrowsError(try port.enableKernelRS485()) {
            XCTAssertTrue(String(describing: $0).contains("pseudo-terminal has no RS485 mode"), "\($0)")
        }
    }

    func testClosedPortFailsWithEBADF() throws {
        let pty = try PTYPair()
        let port = try SerialPort(path: pty.slavePath, line: LineSettings(baud: 9600, parity: .none))
        port.close()
        port.close()
        XCTAssertEqual(port.fileDescriptor, -1)
        var buffer = [UInt8](repeating: 0, count: 4)
        XCTAssertThrowsError(try buffer.withUnsafeMutableBytes { try port.read(into: $0, timeoutNanos: 0) }) {
            XCTAssertEqual(($0 as? SystemError)?.errno, EBADF)
        }
    }

    func testReopeningThePtySlaveWorks() throws {
        let pty = try PTYPair()
        for _ in 0..<3 {
            let port = try SerialPort(path: pty.slavePath, line: LineSettings(baud: 9600, parity: .none))
            try [UInt8]([1, 2, 3]).withUnsafeBytes { _ = try port.write($0) }
            XCTAssertEqual(try readExactly(3) { try pty.readMaster(into: $0, timeoutNanos: $1) }, [1, 2, 3])
            port.close()
        }
    }

    func testTimerSlackIsSetForThisThread() throws {
        let before = MonotonicClock.timerSlackForCurrentThread()
        defer { try? MonotonicClock.setTimerSlackForCurrentThread(nanos: before) }
        try MonotonicClock.setTimerSlackForCurrentThread(nanos: 1_000)
        XCTAssertEqual(MonotonicClock.timerSlackForCurrentThread(), 1_000)
        try MonotonicClock.setTimerSlackForCurrentThread(nanos: 7_000)
        XCTAssertEqual(MonotonicClock.timerSlackForCurrentThread(), 7_000)
    }

    func testMonotonicSleepNeverReturnsEarly() {
        let deadline = MonotonicClock.nowNanos() + 5_000_000
        MonotonicClock.sleep(untilNanos: deadline)
        XCTAssertGreaterThanOrEqual(MonotonicClock.nowNanos(), deadline)
        let before = MonotonicClock.nowNanos()
        MonotonicClock.sleep(untilNanos: before - 1_000_000)  // in the past: returns at once
        XCTAssertLessThan(MonotonicClock.nowNanos() - before, 1_000_000_000)
    }
}

/// Reads until `count` bytes arrived or 2 s passed.
func readExactly(
    _ count: Int, _ read: (UnsafeMutableRawBufferPointer, UInt64) throws -> Int
) throws -> [UInt8] {
    var result: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 512)
    let deadline = MonotonicClock.nowNanos() + 2_000_000_000
    while result.count < count {
        let now = MonotonicClock.nowNanos()
        if now >= deadline { break }
        let n = try chunk.withUnsafeMutableBytes { try read($0, deadline - now) }
        result += chunk[0..<n]
    }
    return result
}

/// The integration-test setup mbusd uses: socat makes a linked pty pair and both ends are opened by path, the way
/// an external simulator (pymodbus, a second meterext) would be attached.
final class SocatPairTests: XCTestCase {
    func testSerialPortsOnBothEndsOfASocatPair() throws {
        guard access("/usr/bin/socat", X_OK) == 0 else { throw XCTSkip("socat not installed") }
        let dir = "/tmp/meterext-socat-\(getpid())"
        mkdir(dir, 0o700)
        defer { rmdir(dir) }
        let a = "\(dir)/ttyA"
        let b = "\(dir)/ttyB"
        // posix_spawn and waitpid, not Foundation's Process: its waitUntilExit() was seen to hang here with socat
        // alive and never signalled, which stalled the whole test run.
        let words = ["socat", "pty,raw,echo=0,link=\(a)", "pty,raw,echo=0,link=\(b)"]
        let argv: [UnsafeMutablePointer<CChar>?] = words.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, "/usr/bin/socat", nil, nil, argv, environ)
        guard rc == 0 else { return XCTFail("posix_spawn socat: errno \(rc)") }
        defer {
            kill(pid, SIGKILL)
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            unlink(a)
            unlink(b)
        }
        let deadline = MonotonicClock.nowNanos() + 5_000_000_000
        while access(a, F_OK) != 0 || access(b, F_OK) != 0 {
            guard MonotonicClock.nowNanos() < deadline else { return XCTFail("socat made no ptys") }
            MonotonicClock.sleep(nanos: 10_000_000)
        }
        let line = LineSettings(baud: 9600, parity: .none)
        let master = try SerialPort(path: a, line: line)
        let meter = try SerialPort(path: b, line: line)
        XCTAssertTrue(master.isPseudoTerminal)
        let request: [UInt8] = [0x01, 0x03, 0x00, 0x30, 0x00, 0x34, 0x0D, 0x0A]
        try request.withUnsafeBytes { _ = try master.write($0) }
        XCTAssertEqual(try readExactly(8) { try meter.read(into: $0, timeoutNanos: $1) }, request)
        let reply: [UInt8] = [0x01, 0x83, 0x02, 0xC0, 0xF1]
        try reply.withUnsafeBytes { _ = try meter.write($0) }
        XCTAssertEqual(try readExactly(5) { try master.read(into: $0, timeoutNanos: $1) }, reply)
        XCTAssertThrowsError(try SerialPort(path: a, line: .meterDefault)) {
            XCTAssertTrue(String(describing: $0).contains("--parity none"), "\($0)")
        }
    }
}
