import XCTest
@testable import MeterStatus

/// Codes and sub-codes as the CalinMeter guide prints them: sub-code "00" for relay closed, otherwise no leading
/// zero ("3", "13"); every way field staff type them is understood (issue 14).
final class StatusCodeTextTests: XCTestCase {
    func testSubCodesAreWrittenAsTheGuideWritesThem() {
        XCTAssertEqual(StatusCodeEntry.subCodeText(0), "00")
        XCTAssertEqual(StatusCodeEntry.subCodeText(3), "3")
        XCTAssertEqual(StatusCodeEntry.subCodeText(13), "13")
        XCTAssertEqual(StatusCodes.relayDisconnectReason(3)?.label, "87.3")
        XCTAssertEqual(StatusCodes.relayDisconnectReason(0)?.label, "87.00")
        XCTAssertEqual(StatusCodes.ami(1003)?.label, "1003")
    }

    func testFormatterUsesTheGuidesSubCodes() throws {
        let ami = StatusCodeFormatter.format(try XCTUnwrap(StatusCodes.ami(1000)))
        XCTAssertTrue(ami.hasPrefix("AMI operating status 1000 (code 87 sub-code 00)\n"), ami)
        let sub = StatusCodeFormatter.format(try XCTUnwrap(StatusCodes.relayDisconnectReason(0)))
        XCTAssertTrue(sub.hasPrefix("Code 87 sub-code 00 (AMI operating status 1000)\n"), sub)
    }

    func testEveryWayOfTypingACodeFindsIt() {
        for text in ["87.3", "87-03", "87.03", "87/3", "1003"] {
            XCTAssertEqual(StatusCodes.lookup(text).map(\.subCode), [3], text)
        }
        XCTAssertEqual(StatusCodes.lookup("87-00").first?.cause, "Relay Closed")
        XCTAssertEqual(StatusCodes.lookup("87.13").first?.cause, "Current Reverse")
        XCTAssertEqual(StatusCodes.lookup("87-2"), [])
    }
}
