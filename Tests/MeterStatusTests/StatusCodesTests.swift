import XCTest
@testable import MeterStatus

/// Expected values are typed in from the CalinMeter guide (seeds 000/001), not read back from the tables.
final class StatusCodesTests: XCTestCase {
    func testCommissioningExampleFromTheGuide() throws {
        // The guide's worked example: operating status 1008 = sub-code 8 "Not-active", commission with 12345.
        let entry = try XCTUnwrap(StatusCodes.ami(1008))
        XCTAssertEqual(entry.table, .amiOperatingStatus)
        XCTAssertEqual(entry.subCode, 8)
        XCTAssertEqual(entry.cause, "Not-active")
        XCTAssertEqual(entry.display, "Not-active (meter not commissioned)")
        XCTAssertTrue(entry.action.contains("12345"))
        XCTAssertTrue(entry.action.lowercased().contains("commission"))
        XCTAssertFalse(entry.prepaidOnly)
    }

    func testRelayClosedIsTheNormalStatus() throws {
        let entry = try XCTUnwrap(StatusCodes.ami(1000))
        XCTAssertEqual(entry.subCode, 0)
        XCTAssertEqual(entry.cause, "Relay Closed")
        XCTAssertEqual(StatusCodes.relayDisconnectReason(0)?.cause, "Relay Closed")
    }

    func testKnownCausesFromTheGuide() {
        let expected: [Int: String] = [
            1003: "Over Power", 1004: "Relay Test", 1005: "Open Upper Cover", 1006: "Open Terminal Cover",
            1007: "Remote Disconnect", 1009: "Over Current", 1011: "Over Voltage", 1012: "Under Voltage",
            1013: "Current Reverse", 1014: "Open Enclosure Cover", 1015: "Magnetic Field Interference",
            1016: "Current Imbalance", 1017: "Neutral Line Interference", 1018: "Bypass",
            1021: "Voltage Imbalance", 1022: "Thermal Overload", 1023: "Low Power Factor", 1024: "Tariff Error",
            1025: "Remote Reconnect + Local Trip",
        ]
        for (code, cause) in expected {
            XCTAssertEqual(StatusCodes.ami(code)?.cause, cause, "AMI \(code)")
        }
    }

    func testNewerActionWordingIsUsed() {
        // Seed 001 revised these actions; the struck-out wording must not come back.
        XCTAssertEqual(StatusCodes.ami(1007)?.action, "Confirm backend/HES instruction; reconnect if not intentional.")
        XCTAssertEqual(StatusCodes.ami(1011)?.action, "Supply voltage too high; report to utility/feeder operator.")
        XCTAssertEqual(StatusCodes.ami(1024)?.action, "Tariff configuration issue; escalate to AMI admin.")
        XCTAssertEqual(StatusCodes.ami(1013)?.display, "Current Reverse (possible tamper/wiring issue)")
        for entry in StatusCodes.allAMI {
            // Run-together remnants of the garbled revision ("issue,action", "prepaidpostpaid") must not appear.
            XCTAssertFalse(entry.action.contains("prepaidpostpaid"), entry.label)
            XCTAssertFalse(entry.action.contains(".,"), entry.label)
        }
    }

    func testTheGuideHasExactlyTheseCodes() {
        let subCodes = [0, 1] + Array(3...9) + Array(11...18) + Array(21...25)
        XCTAssertEqual(StatusCodes.allRelayDisconnectReasons.map(\.code), subCodes)
        XCTAssertEqual(StatusCodes.allAMI.map(\.code), subCodes.map { 1000 + $0 })
        XCTAssertEqual(StatusCodes.allShortCodes.map(\.code), [1, 14, 31, 35, 40, 41, 46, 47, 52, 53, 58, 87])
    }

    func testEveryAMICodeIsItsSubCodePlus1000WithTheSameCauseAndAction() throws {
        for n in 0...25 {
            let ami = StatusCodes.ami(1000 + n)
            let sub = StatusCodes.relayDisconnectReason(n)
            XCTAssertEqual(ami == nil, sub == nil, "1000+\(n) and sub-code \(n) must both exist or both not")
            guard let ami, let sub else { continue }
            XCTAssertEqual(ami.subCode, n)
            XCTAssertEqual(ami.amiCode, 1000 + n)
            XCTAssertEqual(sub.amiCode, 1000 + n)
            XCTAssertEqual(sub.table, .relayDisconnectReason)
            XCTAssertEqual(ami.cause, sub.cause)
            XCTAssertEqual(ami.action, sub.action)
            XCTAssertEqual(ami.prepaidOnly, sub.prepaidOnly)
        }
    }

    func testOnlyTheCreditCodeIsPrepaidOnly() {
        XCTAssertEqual(StatusCodes.allAMI.filter(\.prepaidOnly).map(\.code), [1001])
        XCTAssertEqual(StatusCodes.ami(1001)?.cause, "No Credit")
        XCTAssertEqual(StatusCodes.relayDisconnectReason(1)?.prepaidOnly, true)
    }

    func testCodesMissingFromTheGuideAreUnknown() {
        for code in [1002, 1010, 1019, 1020, 1026, 999, 0, -1, 2000] {
            XCTAssertNil(StatusCodes.ami(code), "AMI \(code)")
        }
        for sub in [2, 10, 19, 20, 26, -1] {
            XCTAssertNil(StatusCodes.relayDisconnectReason(sub), "sub-code \(sub)")
        }
        for short in [0, 2, 13, 15, 30, 59, 86, 88] {
            XCTAssertNil(StatusCodes.shortCode(short), "short code \(short)")
        }
    }

    func testShortCodesAndRuns() throws {
        XCTAssertEqual(StatusCodes.shortCode(14)?.cause, "Load threshold")
        XCTAssertEqual(StatusCodes.shortCode(1)?.label, "01")
        XCTAssertEqual(StatusCodes.shortCode(1)?.cause, "Cumulative total active kWh consumption")
        let inRun = try XCTUnwrap(StatusCodes.shortCode(43))
        XCTAssertEqual(inRun.code, 43)
        XCTAssertEqual(inRun.codeRange, 41...45)
        XCTAssertEqual(inRun.cause, "Last 1st–5th cover open times")
        XCTAssertEqual(StatusCodes.shortCode(51)?.cause, "Last 1st–5th overload trip times")
        XCTAssertEqual(StatusCodes.shortCode(57)?.cause, "Last 1st–5th power down times")
        XCTAssertEqual(StatusCodes.shortCode(87)?.cause, "Reason for relay disconnecting")
        XCTAssertNil(StatusCodes.shortCode(14)?.subCode)
    }

    // MARK: - Text lookup

    func testLookupOfAnAMICode() {
        let found = StatusCodes.lookup("1003")
        XCTAssertEqual(found.map(\.table), [.amiOperatingStatus])
        XCTAssertEqual(found.first?.cause, "Over Power")
        XCTAssertEqual(StatusCodes.lookup("  1008\n").first?.cause, "Not-active")
    }

    func testLookupOfSubCodeForms() {
        for text in ["87.3", "87-3", "87/3", " 87.03 ", "87 / 3"] {
            let found = StatusCodes.lookup(text)
            XCTAssertEqual(found.count, 1, text)
            XCTAssertEqual(found.first?.table, .relayDisconnectReason, text)
            XCTAssertEqual(found.first?.code, 3, text)
            XCTAssertEqual(found.first?.cause, "Over Power", text)
        }
        XCTAssertEqual(StatusCodes.lookup("87.00").first?.cause, "Relay Closed")
        XCTAssertEqual(StatusCodes.lookup("87.8").first?.label, "87.8")
    }

    func testAmbiguousNumberReturnsEveryTableItMatches() {
        let found = StatusCodes.lookup("14")
        XCTAssertEqual(found.map(\.table), [.shortCode, .relayDisconnectReason])
        XCTAssertEqual(found.map(\.cause), ["Load threshold", "Open Enclosure Cover"])
    }

    func testBareNumberThatIsOnlyAShortCode() {
        XCTAssertEqual(StatusCodes.lookup("87").map(\.table), [.shortCode])
        XCTAssertEqual(StatusCodes.lookup("35").first?.cause, "Current total power factor")
    }

    func testUnknownOrMalformedTextGivesNothing() {
        for text in ["", "  ", "1002", "87.2", "87.26", "86.3", "-3", "abc", "10 03", "87.", ".3", "1003x",
                     "99999999999999999999", "٣"] {
            XCTAssertEqual(StatusCodes.lookup(text), [], "'\(text)'")
        }
    }
}
