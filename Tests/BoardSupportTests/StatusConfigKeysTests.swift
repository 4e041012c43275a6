import FoundationEssentials
import XCTest
@testable import BoardSupport

/// `import_only_phases` and `prepaid` in meterext.json (issue 14).
final class StatusConfigKeysTests: XCTestCase {
    func decode(_ json: String) throws -> RunConfigFile {
        try RunConfigFile.decode(Data(json.utf8), file: "test.json")
    }

    func testKeysAreParsed() throws {
        let config = try decode(#"{"import_only_phases":["A","C"],"prepaid":true}"#)
        XCTAssertEqual(config.importOnlyPhases, ["A", "C"])
        XCTAssertEqual(config.prepaid, true)
        XCTAssertNil(try decode("{}").prepaid)
    }

    func testAPhaseThatIsNotAPhaseIsAnError() {
        XCTAssertThrowsError(try decode(#"{"import_only_phases":["L1"]}"#)) { error in
            XCTAssertTrue("\(error)".contains("'L1' is not a phase (A, B or C)"), "\(error)")
        }
        XCTAssertThrowsError(try decode(#"{"prepaid":"yes"}"#))
    }
}
