import XCTest
@testable import KPM33B

/// meterid and relay phases as the meter states them (issue 14).
final class MeterFactsTests: XCTestCase {
    func testSerialIsTheThirteenCharactersAsStored() {
        let stored = Array("33B0087654321".utf8) + [0]
        XCTAssertEqual(MeterPoller.serialNumberText(stored), "33B0087654321")
    }

    func testSerialInAnotherEncodingIsUpperCaseHexNeverEmpty() {
        // BCD-like bytes: nothing printable. The old decoder dropped them all and gave "".
        let stored: [UInt8] = [0x33, 0xB0, 0x08, 0x76, 0x54, 0x32, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00]
        XCTAssertEqual(MeterPoller.serialNumberText(stored), "33B00876543210000000000001")
        XCTAssertEqual(MeterPoller.serialNumberText(Array(repeating: 0, count: 14)), String(repeating: "0", count: 26))
        // One unprintable byte among text: all of it as hex, not a silently shortened serial.
        var mixed = Array("33B0087654321".utf8) + [0]
        mixed[5] = 0x07
        XCTAssertEqual(MeterPoller.serialNumberText(mixed), "33334230300737363534333231")
    }

    func testSimulatorReportsAThirteenCharacterSerial() {
        XCTAssertEqual(SimulatedMeter().serialNumber.count, 13)
    }

    func testRelayPhaseBitsOnlyWhenConsistent() throws {
        let closed = try XCTUnwrap(RelayState(bits: 0x07).phases)
        XCTAssertTrue(closed.a && closed.b && closed.c)
        let open = try XCTUnwrap(RelayState(bits: 0x00).phases)
        XCTAssertFalse(open.a || open.b || open.c)
        // The manual's worked example: 0x01 for "all closed". Bit 0 is the relay; phases B and C are not "off".
        XCTAssertTrue(RelayState(bits: 0x01).closed)
        XCTAssertNil(RelayState(bits: 0x01).phases)
        XCTAssertFalse(RelayState(bits: 0x01).phasesReported)
        XCTAssertNil(RelayState(bits: 0x03).phases)
    }
}

/// The board remembers that it opened the relay itself (for 1007), until the relay is read closed again.
final class RelayOpenedByBoardTests: XCTestCase {
    func testRememberedUntilTheRelayIsSeenClosed() throws {
        let meter = SimulatedMeter()
        let clock = ManualClock()
        let poller = MeterPoller(client: LoopbackClient(meter: meter), unit: 1, lineDescription: "9600 8E1",
                                 clock: clock.pollClock)
        poller.runCycle()
        XCTAssertFalse(poller.snapshot().relayOpenedByBoard)
        _ = try poller.performRelay(closed: false).get()
        XCTAssertTrue(poller.snapshot().relayOpenedByBoard)
        clock.advance(seconds: 1)
        poller.runCycle()
        XCTAssertTrue(poller.snapshot().relayOpenedByBoard, "still open, still ours")
        // Someone closes it at the meter, and later it opens again on its own: not ours any more.
        meter.setRelay(closed: true)
        clock.advance(seconds: 1)
        poller.runCycle()
        XCTAssertFalse(poller.snapshot().relayOpenedByBoard)
        meter.setRelay(closed: false)
        clock.advance(seconds: 1)
        poller.runCycle()
        XCTAssertEqual(poller.snapshot().relay?.closed, false)
        XCTAssertFalse(poller.snapshot().relayOpenedByBoard)
    }
}
