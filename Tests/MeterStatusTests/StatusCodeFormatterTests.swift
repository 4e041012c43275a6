import XCTest
@testable import MeterStatus

final class StatusCodeFormatterTests: XCTestCase {
    func testAMIEntryNamesTableSubCodeCauseAndAction() throws {
        let text = StatusCodeFormatter.format(try XCTUnwrap(StatusCodes.ami(1008)))
        XCTAssertEqual(text, """
            AMI operating status 1008 (code 87 sub-code 8)
            Cause:  Not-active (meter not commissioned)
            Action: Commission meter (default code: 12345).
            """)
    }

    func testPrepaidOnlyNote() throws {
        let text = StatusCodeFormatter.format(try XCTUnwrap(StatusCodes.relayDisconnectReason(1)))
        let lines = text.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.first, "Code 87 sub-code 1 (AMI operating status 1001)")
        XCTAssertEqual(lines.count, 4)
        XCTAssertTrue(lines[3].contains("prepaid only"), lines[3])
        XCTAssertFalse(StatusCodeFormatter.format(try XCTUnwrap(StatusCodes.ami(1003))).contains("prepaid"))
    }

    func testShortCodeInARunShowsTheRun() throws {
        let text = StatusCodeFormatter.format(try XCTUnwrap(StatusCodes.shortCode(43)))
        XCTAssertEqual(text, """
            Short code 43 (one of 41-45)
            Meaning: Last 1st–5th cover open times
            Action:  Verify tamper history
            """)
    }

    func testAmbiguousLookupIsFormattedAsSeparateBlocks() {
        let text = StatusCodeFormatter.format(StatusCodes.lookup("14"), query: "14")
        let blocks = text.split(separator: "\n\n").map(String.init)
        XCTAssertEqual(blocks.count, 2)
        XCTAssertTrue(blocks[0].hasPrefix("Short code 14\n"), blocks[0])
        XCTAssertTrue(blocks[1].hasPrefix("Code 87 sub-code 14 (AMI operating status 1014)\n"), blocks[1])
    }

    func testUnknownCodeMessage() {
        XCTAssertEqual(StatusCodeFormatter.format(StatusCodes.lookup("1002"), query: "1002"),
                       "Unknown status code: 1002")
    }
}
