import Glibc
import Platform
import XCTest

@testable import MeterHardware

/// The set-up button's line through the C shim (issue 13). This machine has no GPIO chip: the error paths are what
/// can run here; the edge handling is covered by `SetupButtonWatcher` with an injected edge source (DeviceState).
final class GPIOButtonLineTests: XCTestCase {
    func testMissingLineIsNamed() {
        XCTAssertThrowsError(try GPIOButtonLine(.named("METEREXT_NO_SUCH_BUTTON"))) { error in
            guard let error = error as? SystemError else { return XCTFail("\(error)") }
            XCTAssertEqual(error.operation, "request GPIO line")
            XCTAssertEqual(error.path, "METEREXT_NO_SUCH_BUTTON")
            XCTAssertEqual(error.errno, ENOENT)
            XCTAssertTrue(error.detail?.contains("\"METEREXT_NO_SUCH_BUTTON\"") == true, error.description)
        }
    }

    func testMissingChipIsNamed() {
        XCTAssertThrowsError(try GPIOButtonLine(.chipOffset(chip: "gpiochip97", offset: 22))) { error in
            guard let error = error as? SystemError else { return XCTFail("\(error)") }
            XCTAssertTrue(error.detail?.contains("cannot open /dev/gpiochip97") == true, error.description)
        }
    }
}
