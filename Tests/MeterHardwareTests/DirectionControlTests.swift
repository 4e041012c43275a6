import Platform
import Glibc
import ModbusCore
import XCTest

@testable import MeterHardware

final class DirectionModeTests: XCTestCase {
    func testValidForms() throws {
        let cases: [(String, DirectionMode)] = [
            ("none", .none),
            ("rts", .rts),
            ("RTS", .rts),
            (" kernel ", .kernel),
            ("gpio:GPIO17", .gpio(.named("GPIO17"))),
            ("GPIO:GPIO17", .gpio(.named("GPIO17"))),
            ("gpio:RS485_DE", .gpio(.named("RS485_DE"))),
            ("gpio:gpiochip0:17", .gpio(.chipOffset(chip: "gpiochip0", offset: 17))),
            ("gpio:/dev/gpiochip4:17", .gpio(.chipOffset(chip: "/dev/gpiochip4", offset: 17))),
            ("gpio:0:4", .gpio(.chipOffset(chip: "0", offset: 4))),
            ("gpio:gpiochip0:4", .gpio(.chipOffset(chip: "gpiochip0", offset: 4))),
        ]
        for (text, expected) in cases {
            XCTAssertEqual(try DirectionMode(parsing: text), expected, text)
        }
    }

    func testDescriptionRoundTrips() throws {
        for mode: DirectionMode in [
            .none, .rts, .kernel, .gpio(.named("GPIO17")), .gpio(.chipOffset(chip: "/dev/gpiochip4", offset: 17)),
        ] {
            XCTAssertEqual(try DirectionMode(parsing: mode.description), mode, mode.description)
        }
        XCTAssertEqual(DirectionMode.gpio(.chipOffset(chip: "gpiochip0", offset: 17)).description, "gpio:gpiochip0:17")
        // Text in the canonical form comes back unchanged: `meterext run` passes a profile's mode on as text.
        for text in ["none", "rts", "kernel", "gpio:GPIO17", "gpio:gpiochip0:17"] {
            XCTAssertEqual(try DirectionMode(parsing: text).description, text)
        }
    }

    func testGPIOPartIsTheLineSyntax() throws {
        // `gpio:` is followed by exactly what GPIOLineSpec(parsing:) accepts, as in a profile's status_led.
        for line in ["GPIO17", "RS485_DE", "gpiochip0:4", "/dev/gpiochip4:17", "0:4"] {
            XCTAssertEqual(try DirectionMode(parsing: "gpio:" + line), .gpio(try GPIOLineSpec(parsing: line)), line)
        }
        for line in ["gpiochip4:x", ":17", "a:b:c", "GPIO 17", "17"] {
            XCTAssertThrowsError(try GPIOLineSpec(parsing: line), line)
            XCTAssertThrowsError(try DirectionMode(parsing: "gpio:" + line), line)
        }
    }

    func testInvalidFormsExplainThemselves() {
        let cases: [(String, String)] = [
            ("", "it is empty"),
            ("auto", "unknown mode"),
            ("auto-ish", "unknown mode"),
            ("gpio", "unknown mode"),
            ("gpio:", "needs a line name"),
            ("gpio:17", "bare number is ambiguous; give the line name (gpio:GPIO17)"),
            ("gpio:gpiochip0:", "must be a number"),
            ("gpio:gpiochip0:x7", "must be a number, got \"x7\""),
            ("gpio:gpiochip0:-1", "must be a number"),
            ("gpio:gpiochip0:99999999999", "must be a number"),
            ("gpio::17", "the chip before \":17\" is missing"),
            ("gpio:GPIO 17", "no spaces"),
            ("gpio:a:b:c", "must be a number, got \"c\""),
        ]
        for (text, reason) in cases {
            XCTAssertThrowsError(try DirectionMode(parsing: text), text) { error in
                guard let error = error as? DirectionMode.ParseError else {
                    return XCTFail("\(text): not a ParseError: \(error)")
                }
                XCTAssertTrue(error.reason.contains(reason), "\(text): \(error.reason)")
                XCTAssertTrue(error.description.contains("\"\(text)\""), error.description)
                XCTAssertTrue(error.description.contains("gpio:gpiochip0:17"), error.description)
            }
        }
    }

    func testNoneControlDoesNothingAndNeedsNoWait() throws {
        let pty = try PTYPair()
        let port = try SerialPort(path: pty.slavePath, line: LineSettings(baud: 9600, parity: .none))
        let control = try DirectionMode.none.makeControl(for: port)
        XCTAssertTrue(control is NoDirectionControl)
        XCTAssertFalse(control.needsEndOfFrameWait)
        XCTAssertNoThrow(try control.beginTransmit())
        XCTAssertNoThrow(try control.endTransmit())
    }

    func testKernelModeOnAPtyFailsAtStart() throws {
        let pty = try PTYPair()
        let port = try SerialPort(path: pty.slavePath, line: LineSettings(baud: 9600, parity: .none))
        XCTAssertThrowsError(try DirectionMode.kernel.makeControl(for: port)) {
            let text = String(describing: $0)
            XCTAssertTrue(text.contains(pty.slavePath), text)
            XCTAssertTrue(text.contains("TIOCSRS485"), text)
        }
    }

    func testRTSModeOnAPtyFailsAtStart() throws {
        // A pty has no modem lines; the kernel refuses TIOCMBIC on it. The failure must name the port and say why.
        let pty = try PTYPair()
        let port = try SerialPort(path: pty.slavePath, line: LineSettings(baud: 9600, parity: .none))
        XCTAssertThrowsError(try DirectionMode.rts.makeControl(for: port)) {
            let text = String(describing: $0)
            XCTAssertTrue(text.hasPrefix("release RTS on \(pty.slavePath): "), text)
            XCTAssertTrue(text.contains("pseudo-terminal has no RTS line"), text)
        }
    }
}

final class GPIOLineSpecTests: XCTestCase {
    func testValidForms() throws {
        let cases: [(String, GPIOLineSpec)] = [
            ("GPIO17", .named("GPIO17")),
            ("RS485_DE", .named("RS485_DE")),
            (" GPIO27 ", .named("GPIO27")),
            ("gpiochip4:17", .chipOffset(chip: "gpiochip4", offset: 17)),
            ("/dev/gpiochip4:17", .chipOffset(chip: "/dev/gpiochip4", offset: 17)),
            ("0:4", .chipOffset(chip: "0", offset: 4)),
        ]
        for (text, expected) in cases {
            XCTAssertEqual(try GPIOLineSpec(parsing: text), expected, text)
        }
    }

    func testDescriptionRoundTrips() throws {
        for spec: GPIOLineSpec in [.named("GPIO17"), .chipOffset(chip: "gpiochip0", offset: 17), .chipOffset(chip: "/dev/gpiochip4", offset: 4)] {
            XCTAssertEqual(try GPIOLineSpec(parsing: spec.description), spec, spec.description)
        }
        for text in ["GPIO17", "gpiochip0:17"] {
            XCTAssertEqual(try GPIOLineSpec(parsing: text).description, text)
        }
    }

    func testInvalidFormsExplainThemselves() {
        let cases: [(String, String)] = [
            ("", "it is empty"),
            ("  ", "it is empty"),
            ("gpiochip4:x", "must be a number, got \"x\""),
            ("gpiochip4:", "must be a number"),
            ("gpiochip4:-1", "must be a number"),
            ("gpiochip4:99999999999", "must be a number"),
            (":17", "the chip before \":17\" is missing"),
            ("a:b:c", "must be a number, got \"c\""),
            ("GPIO 17", "no spaces"),
            ("17", "bare number is ambiguous; give the line name (GPIO17) or the chip too (gpiochip0:17)"),
        ]
        for (text, reason) in cases {
            XCTAssertThrowsError(try GPIOLineSpec(parsing: text), text) { error in
                guard let error = error as? GPIOLineSpec.ParseError else {
                    return XCTFail("\(text): not a ParseError: \(error)")
                }
                XCTAssertEqual(error.input, text)
                XCTAssertTrue(error.reason.contains(reason), "\(text): \(error.reason)")
                XCTAssertTrue(error.description.hasPrefix("invalid GPIO line \"\(text)\": "), error.description)
                XCTAssertTrue(error.description.contains("NAME (e.g. GPIO17) or CHIP:OFFSET (e.g. gpiochip0:17)"), error.description)
            }
        }
    }
}

final class GPIOTests: XCTestCase {
    // This machine has no /dev/gpiochip*, so only the failure paths can run here; each must name the line.

    func testShimWasBuiltAgainstALibgpiodAPI() {
        XCTAssertTrue(["libgpiod 1.x", "libgpiod 2.x"].contains(GPIOOutputLine.libraryAPI), GPIOOutputLine.libraryAPI)
    }

    private func chipsPresent() -> Bool {
        guard let dir = opendir("/dev") else { return false }
        defer { closedir(dir) }
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
            if name.hasPrefix("gpiochip") { return true }
        }
        return false
    }

    func testMissingLineNameIsNamed() throws {
        let pty = try PTYPair()
        let port = try SerialPort(path: pty.slavePath, line: LineSettings(baud: 9600, parity: .none))
        let mode = try DirectionMode(parsing: "gpio:METEREXT_NO_SUCH_LINE")
        XCTAssertThrowsError(try mode.makeControl(for: port)) { error in
            guard let error = error as? SystemError else { return XCTFail("\(error)") }
            XCTAssertEqual(error.operation, "request GPIO line")
            XCTAssertEqual(error.path, "METEREXT_NO_SUCH_LINE")
            XCTAssertEqual(error.errno, ENOENT)
            XCTAssertTrue(error.description.hasPrefix("request GPIO line METEREXT_NO_SUCH_LINE: "), error.description)
            XCTAssertTrue(error.detail?.contains("\"METEREXT_NO_SUCH_LINE\"") == true, error.description)
            if !chipsPresent() {
                XCTAssertTrue(error.detail?.contains("no GPIO chips at all") == true, error.description)
            } else {
                XCTAssertTrue(error.detail?.contains("no line of that name") == true, error.description)
            }
        }
    }

    func testMissingChipIsNamed() {
        for (chip, path) in [("gpiochip97", "/dev/gpiochip97"), ("/dev/gpiochip97", "/dev/gpiochip97"), ("97", "/dev/gpiochip97")] {
            XCTAssertThrowsError(try GPIOOutputLine(.chipOffset(chip: chip, offset: 17), initialValue: false)) { error in
                guard let error = error as? SystemError else { return XCTFail("\(error)") }
                XCTAssertEqual(error.errno, ENOENT)
                XCTAssertEqual(error.path, "\(chip):17")
                XCTAssertTrue(error.detail?.contains("cannot open \(path)") == true, error.description)
                XCTAssertTrue(error.detail?.contains("gpiodetect") == true, error.description)
            }
        }
    }

    func testNonGPIODeviceAsChipIsRefused() {
        XCTAssertThrowsError(try GPIOOutputLine(.chipOffset(chip: "/dev/null", offset: 0), initialValue: false)) {
            error in
            let text = String(describing: error)
            XCTAssertTrue(text.hasPrefix("request GPIO line /dev/null:0: "), text)
            XCTAssertTrue(text.contains("not a GPIO character device"), text)
        }
    }
}
