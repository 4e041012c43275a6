import Platform
import Foundation
import Glibc
import ModbusCore
import XCTest

@testable import MeterHardware

/// Records every DE switch with its monotonic time and whether the frame had reached the bus (the pty master) yet.
final class RecordingDirectionControl: DirectionControl {
    enum Event: Equatable {
        case begin(bytesOnBus: Bool)
        case end(bytesOnBus: Bool)
    }

    private let busFD: Int32
    private(set) var events: [Event] = []
    private(set) var times: [UInt64] = []

    init(observing busFD: Int32) {
        self.busFD = busFD
        events.reserveCapacity(16)
        times.reserveCapacity(16)
    }

    private func bytesOnBus() -> Bool {
        var descriptor = pollfd(fd: busFD, events: Int16(POLLIN), revents: 0)
        return poll(&descriptor, 1, 0) == 1 && descriptor.revents & Int16(POLLIN) != 0
    }

    func beginTransmit() throws(SystemError) {
        events.append(.begin(bytesOnBus: bytesOnBus()))
        times.append(MonotonicClock.nowNanos())
    }

    func endTransmit() throws(SystemError) {
        times.append(MonotonicClock.nowNanos())
        events.append(.end(bytesOnBus: bytesOnBus()))
    }

    var description: String { "recording" }
}

final class RS485PortTests: XCTestCase {
    private let line = LineSettings(baud: 9600, parity: .none)
    private let request: [UInt8] = [0x01, 0x03, 0x00, 0x30, 0x00, 0x34, 0x44, 0x18]

    func testDirectionIsAssertedBeforeTheWriteAndReleasedAfterTheLastStopBit() throws {
        let pty = try PTYPair()
        let recorder = RecordingDirectionControl(observing: pty.masterFD)
        let port = RS485Port(port: try SerialPort(path: pty.slavePath, line: line), direction: recorder)

        let timing = try request.withUnsafeBytes { try port.send($0) }

        XCTAssertEqual(recorder.events, [.begin(bytesOnBus: false), .end(bytesOnBus: true)])
        let characterNanos = FrameTiming(line).characterNanos  // 10 bits at 9600: 1.042 ms
        XCTAssertEqual(timing.bytes, 8)
        XCTAssertLessThanOrEqual(recorder.times[0], timing.writeStartNanos)
        XCTAssertLessThanOrEqual(timing.directionAssertedNanos, timing.writeStartNanos)
        XCTAssertLessThanOrEqual(timing.writeStartNanos, timing.writeReturnedNanos)
        XCTAssertGreaterThanOrEqual(timing.lastStopBitNanos, timing.writeStartNanos + 8 * characterNanos)
        XCTAssertGreaterThanOrEqual(recorder.times[1], timing.lastStopBitNanos, "DE released before the last stop bit")
        XCTAssertGreaterThanOrEqual(timing.directionReleasedNanos, timing.lastStopBitNanos)
        XCTAssertEqual(timing.endOfFrame, .computed)
        XCTAssertNil(timing.confirmedNanos)
        XCTAssertGreaterThanOrEqual(timing.releaseAfterLastStopBitNanos, 0)

        XCTAssertEqual(try readExactly(8) { try pty.readMaster(into: $0, timeoutNanos: $1) }, request)
    }

    func testTurnaroundIsChosenFromTheDirectionAndTheDevice() throws {
        let pty = try PTYPair()
        let serial = try SerialPort(path: pty.slavePath, line: line)
        XCTAssertEqual(RS485Port(port: serial, direction: NoDirectionControl()).turnaround, .hardware)
        XCTAssertEqual(
            RS485Port(port: serial, direction: RecordingDirectionControl(observing: pty.masterFD)).turnaround,
            .computedWireTime)
    }

    func testWithTEMTDirectionIsHeldUntilTheDriverReportsEmpty() throws {
        let pty = try PTYPair()
        let recorder = RecordingDirectionControl(observing: pty.masterFD)
        var answers: [Bool] = [false, false, false, true]
        var askedAt: [UInt64] = []
        // 1200 baud: the port polls TEMT for up to 1.5 characters past the computed end; a 14 ms window (rather
        // than 1.7 ms at 9600) keeps four polls inside it on a loaded machine, so the test checks the logic,
        // not the scheduler.
        let slowLine = LineSettings(baud: 1200, parity: .none)
        let port = RS485Port(
            port: try SerialPort(path: pty.slavePath, line: slowLine), direction: recorder, timing: nil,
            turnaround: .transmitterEmpty,
            transmitterEmpty: {
                askedAt.append(MonotonicClock.nowNanos())
                return answers.isEmpty ? true : answers.removeFirst()
            })
        let timing = try request.withUnsafeBytes { try port.send($0) }
        XCTAssertEqual(timing.endOfFrame, .transmitterEmpty)
        XCTAssertEqual(askedAt.count, 4, "kept asking until the driver said empty")
        XCTAssertGreaterThanOrEqual(askedAt.first!, timing.lastStopBitNanos, "asked before the UART could be done")
        let confirmed = try XCTUnwrap(timing.confirmedNanos)
        XCTAssertGreaterThanOrEqual(confirmed, askedAt.last!)
        XCTAssertGreaterThanOrEqual(timing.directionReleasedNanos, confirmed)
        XCTAssertEqual(recorder.events, [.begin(bytesOnBus: false), .end(bytesOnBus: true)])
        XCTAssertGreaterThanOrEqual(recorder.times[1], confirmed)
    }

    func testWhenTEMTNeverComesDirectionIsReleasedAfterT15Anyway() throws {
        let pty = try PTYPair()
        let recorder = RecordingDirectionControl(observing: pty.masterFD)
        let port = RS485Port(
            port: try SerialPort(path: pty.slavePath, line: line), direction: recorder, timing: nil,
            turnaround: .transmitterEmpty, transmitterEmpty: { false })
        let timing = try request.withUnsafeBytes { try port.send($0) }
        XCTAssertEqual(timing.endOfFrame, .transmitterEmptyLate)
        XCTAssertNil(timing.confirmedNanos)
        XCTAssertGreaterThanOrEqual(timing.directionReleasedNanos, timing.lastStopBitNanos + port.timing.t15Nanos)
        XCTAssertEqual(recorder.events.count, 2)
    }

    func testWithoutTEMTTheDrainPathStillWaitsForTheComputedEnd() throws {
        let pty = try PTYPair()
        let recorder = RecordingDirectionControl(observing: pty.masterFD)
        let port = RS485Port(
            port: try SerialPort(path: pty.slavePath, line: line), direction: recorder, timing: nil,
            turnaround: .drain, transmitterEmpty: { nil })
        let timing = try request.withUnsafeBytes { try port.send($0) }
        XCTAssertEqual(timing.endOfFrame, .drained)
        XCTAssertNotNil(timing.confirmedNanos)
        XCTAssertGreaterThanOrEqual(timing.directionReleasedNanos, timing.lastStopBitNanos)
    }

    func testEveryFrameIsBracketed() throws {
        let pty = try PTYPair()
        let recorder = RecordingDirectionControl(observing: pty.masterFD)
        let port = RS485Port(port: try SerialPort(path: pty.slavePath, line: LineSettings(baud: 19200, parity: .none)), direction: recorder)
        for _ in 0..<3 {
            try request.withUnsafeBytes { _ = try port.send($0) }
            XCTAssertEqual(try readExactly(8) { try pty.readMaster(into: $0, timeoutNanos: $1) }, request)
        }
        XCTAssertEqual(recorder.events.count, 6)
        XCTAssertEqual(recorder.times, recorder.times.sorted())
        for (index, event) in recorder.events.enumerated() {
            XCTAssertEqual(event, index % 2 == 0 ? .begin(bytesOnBus: false) : .end(bytesOnBus: true))
        }
    }

    func testAutoDirectionDoesNotWaitForTheWire() throws {
        let pty = try PTYPair()
        let port = try RS485Port(path: pty.slavePath, line: LineSettings(baud: 1200, parity: .none), direction: .none)
        // 64 bytes at 1200 8N1 take 533 ms on a wire; with auto-direction send must not sit that out.
        let frame = [UInt8](repeating: 0x55, count: 64)
        let timing = try frame.withUnsafeBytes { try port.send($0) }
        XCTAssertEqual(timing.endOfFrame, .notWaited)
        XCTAssertLessThan(timing.directionReleasedNanos, timing.lastStopBitNanos)
        XCTAssertEqual(try readExactly(64) { try pty.readMaster(into: $0, timeoutNanos: $1) }, frame)
    }

    func testDirectionIsReleasedWhenTheWriteFails() throws {
        let pty = try PTYPair()
        let recorder = RecordingDirectionControl(observing: pty.masterFD)
        let serial = try SerialPort(path: pty.slavePath, line: line)
        let port = RS485Port(port: serial, direction: recorder)
        serial.close()
        XCTAssertThrowsError(try request.withUnsafeBytes { try port.send($0) }) {
            XCTAssertEqual(($0 as? SystemError)?.errno, EBADF)
            XCTAssertEqual(($0 as? SystemError)?.operation, "write")
        }
        XCTAssertEqual(recorder.events, [.begin(bytesOnBus: false), .end(bytesOnBus: false)])
    }

    func testReceiveGetsTheReplyAndTimesOutWithZero() throws {
        let pty = try PTYPair()
        let port = try RS485Port(path: pty.slavePath, line: line, direction: .none)
        var buffer = [UInt8](repeating: 0, count: 64)
        XCTAssertEqual(try buffer.withUnsafeMutableBytes { try port.receive(into: $0, timeoutNanos: 10_000_000) }, 0)
        let reply: [UInt8] = [0x01, 0x01, 0x01, 0x07, 0x90, 0x4A]
        try reply.withUnsafeBytes { _ = try pty.writeMaster($0) }
        let got = try readExactly(reply.count) { try port.receive(into: $0, timeoutNanos: $1) }
        XCTAssertEqual(got, reply)
    }

    func testWaitForSilenceDiscardsWhatIsOnTheLine() throws {
        let pty = try PTYPair()
        let port = try RS485Port(path: pty.slavePath, line: line, direction: .none)
        let t35 = port.timing.t35Nanos
        try [UInt8](repeating: 0xEE, count: 5).withUnsafeBytes { _ = try pty.writeMaster($0) }
        let start = MonotonicClock.nowNanos()
        XCTAssertTrue(try port.waitForSilence(nanos: t35))
        XCTAssertEqual(port.discardedBytes, 5)
        // Quiet for t3.5 after the last discarded byte.
        XCTAssertGreaterThanOrEqual(MonotonicClock.nowNanos() - start, t35)
        var buffer = [UInt8](repeating: 0, count: 8)
        XCTAssertEqual(try buffer.withUnsafeMutableBytes { try port.receive(into: $0, timeoutNanos: 0) }, 0)
    }

    func testWaitForSilenceOnAQuietLineIsImmediate() throws {
        let pty = try PTYPair()
        let port = try RS485Port(path: pty.slavePath, line: line, direction: .none)
        MonotonicClock.sleep(nanos: port.timing.t35Nanos)
        let start = MonotonicClock.nowNanos()
        XCTAssertTrue(try port.waitForSilence(nanos: port.timing.t35Nanos))
        XCTAssertEqual(port.discardedBytes, 0)
        XCTAssertLessThan(MonotonicClock.nowNanos() - start, port.timing.t35Nanos * 100)
    }

    func testWaitForSilenceGivesUpOnABabblingLine() throws {
        let pty = try PTYPair()
        let port = try RS485Port(path: pty.slavePath, line: line, direction: .none)
        let master = pty.masterFD
        let stop = ManagedAtomicFlag()
        let babbler = Thread {
            var byte: UInt8 = 0x5A
            while !stop.isSet {
                _ = write(master, &byte, 1)
                usleep(1_000)
            }
        }
        babbler.start()
        defer { stop.set() ; usleep(20_000) }
        // t3.5 never passes between bytes 1 ms apart when asking for 20 ms of quiet; the limit is 100 ms.
        XCTAssertFalse(try port.waitForSilence(nanos: 20_000_000, limitNanos: 100_000_000))
        XCTAssertGreaterThan(port.discardedBytes, 0)
    }
}

final class ManagedAtomicFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    var isSet: Bool { lock.withLock { value } }
    func set() { lock.withLock { value = true } }
}
