import Platform
import Glibc
import ModbusCore
import XCTest

@testable import MeterHardware

// No heap allocation per call on the hot path. The workload below is measured from outside with valgrind, which
// counts every malloc (Swift objects, C library, libgpiod): run it with two round counts and compare. Valgrind
// 3.19 can't read the DWARF 5 Swift emits, so run it on a copy stripped of debug info:
//
//   cp .build/x86_64-unknown-linux-gnu/debug/meterextPackageTests.xctest /tmp/t.xctest && strip -g /tmp/t.xctest
//   for n in 10 210; do METEREXT_HOTPATH_ROUNDS=$n valgrind /tmp/t.xctest \
//     MeterHardwareTests.HotPathAllocationTests/testHotPathWorkload 2>&1 | grep "total heap usage"; done
//
// Measured: 2,381 allocs at 10 rounds, 2,363 at 210 (XCTest's own noise is about ±20), so the 200 extra rounds
// (400 sends, 200 receives, silences, flushes, drains, TEMT probes) allocated nothing; adding one 20-element
// array per round to the workload shows up as exactly +200. (Swift's runtime allocation hook _swift_allocObject
// would allow an in-process count, but enabling it routes every retain through an adapter that crashes on
// non-pointer retains on Linux.)

/// A direction control that only counts, so the test double itself doesn't allocate.
private final class CountingDirectionControl: DirectionControl {
    var begins = 0
    var ends = 0
    func beginTransmit() throws(SystemError) { begins += 1 }
    func endTransmit() throws(SystemError) { ends += 1 }
    var description: String { "counting" }
}

final class HotPathAllocationTests: XCTestCase {
    func testHotPathWorkload() throws {
        let pty = try PTYPair()
        let line = LineSettings(baud: 115200, parity: .none)
        let control = CountingDirectionControl()
        let serial = try SerialPort(path: pty.slavePath, line: line)
        let port = RS485Port(port: serial, direction: control)
        let temtPort = RS485Port(
            port: serial, direction: control, timing: nil, turnaround: .transmitterEmpty, transmitterEmpty: { true })
        let request: [UInt8] = [0x01, 0x03, 0x00, 0x30, 0x00, 0x34, 0x44, 0x18]
        let reply: [UInt8] = [0x01, 0x05, 0x00, 0x01, 0xFF, 0x00, 0xDD, 0xFA]
        var buffer = [UInt8](repeating: 0, count: 256)
        let iterations = getenv("METEREXT_HOTPATH_ROUNDS").flatMap { Int(String(cString: $0)) } ?? 20

        func oneRound() throws {
            try request.withUnsafeBytes { bytes in
                _ = try port.send(bytes)
                _ = try temtPort.send(bytes)
            }
            var got = 0
            while got < 2 * request.count {
                got += try buffer.withUnsafeMutableBytes { try pty.readMaster(into: $0, timeoutNanos: 1_000_000_000) }
            }
            try reply.withUnsafeBytes { _ = try pty.writeMaster($0) }
            got = 0
            while got < reply.count {
                got += try buffer.withUnsafeMutableBytes { try port.receive(into: $0, timeoutNanos: 1_000_000_000) }
            }
            _ = try buffer.withUnsafeMutableBytes { try serial.read(into: $0, timeoutNanos: 0) }
            _ = try port.waitForSilence(nanos: port.timing.t35Nanos)
            try port.flushInput()
            try serial.drain()
            _ = serial.transmitterEmpty()
            _ = MonotonicClock.nowNanos()
        }

        try oneRound()  // warm up: lazy globals, first-use metadata
        for _ in 0..<iterations { try oneRound() }
        XCTAssertEqual(control.begins, 2 * (iterations + 1))
        XCTAssertEqual(control.ends, control.begins)
    }
}
