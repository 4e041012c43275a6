import FoundationEssentials
import MeterHardware
import XCTest
@testable import BoardSupport

final class BoardProfileTests: XCTestCase {
    let shippedLoader = BoardProfileLoader(searchPath: [repoRoot + "/board/profiles"])

    func testEveryShippedProfileLoadsAndNeedsAnExistingOverlay() throws {
        let names = shippedLoader.availableNames()
        XCTAssertEqual(Set(names), ["rpi-max485", "waveshare-rs485-can-hat", "rpi5-max485", "usb-rs485", "rpi-kernel-rs485"])
        for name in names {
            let profile = try shippedLoader.load(name)
            XCTAssertEqual(profile.name, name)
            XCTAssertFalse(profile.boards.isEmpty, name)
            // `meterext run` hands the profile's direction on as text, to be parsed again by DirectionMode.
            XCTAssertEqual(try DirectionMode(parsing: profile.direction.description), profile.direction, name)
            if let overlay = profile.overlay {
                XCTAssertEqual(access("\(repoRoot)/overlays/\(overlay).dts", R_OK), 0, "\(name) needs overlays/\(overlay).dts")
                XCTAssertTrue(profile.configTxt.contains("dtoverlay=\(overlay)"), "\(name) must load its overlay")
            }
        }
    }

    func testShippedProfilesDescribeTheirWiring() throws {
        let pi = try shippedLoader.load("rpi-max485")
        XCTAssertEqual(pi.serial, "/dev/ttyAMA0")
        XCTAssertEqual(pi.direction, .gpio(.named("GPIO17")))
        XCTAssertEqual(pi.statusLED, .named("GPIO27"))
        XCTAssertEqual(pi.setupButton, .named("GPIO22"))
        XCTAssertTrue(pi.configTxt.contains("dtoverlay=disable-bt"))

        XCTAssertEqual(try shippedLoader.load("waveshare-rs485-can-hat").direction, .gpio(.named("GPIO4")))
        XCTAssertEqual(try shippedLoader.load("rpi-kernel-rs485").direction, .kernel)
        let usb = try shippedLoader.load("usb-rs485")
        XCTAssertEqual(usb.direction, DirectionMode.none)
        XCTAssertTrue(usb.serial.hasPrefix("/dev/serial/by-id/"))
        XCTAssertNil(usb.overlay)
        let pi5 = try shippedLoader.load("rpi5-max485")
        XCTAssertTrue(pi5.configTxt.contains("dtparam=uart0=on"))
        XCTAssertFalse(pi5.configTxt.contains("dtoverlay=disable-bt"))
    }

    func testUnknownNameListsAvailableProfiles() {
        XCTAssertThrowsError(try shippedLoader.load("rpi-max458")) { error in
            let text = String(describing: error)
            XCTAssertTrue(text.contains("unknown board 'rpi-max458'"), text)
            XCTAssertTrue(text.contains("rpi-kernel-rs485, rpi-max485, rpi5-max485, usb-rs485, waveshare-rs485-can-hat"), text)
        }
    }

    func testNameThatCouldEscapeTheDirectoryIsRefused() {
        XCTAssertThrowsError(try shippedLoader.load("../meterext")) { error in
            XCTAssertEqual(error as? BoardProfileError, .invalidName("../meterext"))
        }
    }

    func testEarlierDirectoryWinsAndMalformedFileIsNamed() throws {
        let etc = makeTempDirectory(), share = makeTempDirectory()
        defer { removeTree(etc); removeTree(share) }
        let base = #"{"name":"x","description":"d","boards":["b"],"serial":"/dev/ttyS1","direction":"rts"}"#
        writeFile(share + "/x.json", base)
        writeFile(etc + "/x.json", base.replacingOccurrences(of: "ttyS1", with: "ttyUSB0"))
        let loader = BoardProfileLoader(searchPath: [etc, share])
        XCTAssertEqual(try loader.load("x").serial, "/dev/ttyUSB0")
        XCTAssertEqual(try loader.load("x").direction, .rts)

        writeFile(etc + "/x.json", #"{"name":"x", "description": }"#)
        XCTAssertThrowsError(try loader.load("x")) { error in
            let text = String(describing: error)
            XCTAssertTrue(text.hasPrefix("malformed board profile \(etc)/x.json: "), text)
        }
        writeFile(etc + "/x.json", base.replacingOccurrences(of: #""direction":"rts""#, with: #""direction":"gpio:""#))
        XCTAssertThrowsError(try loader.load("x")) { error in
            let text = String(describing: error)
            XCTAssertTrue(text.contains("at 'direction'") && text.contains(#"invalid direction control "gpio:""#), text)
            XCTAssertTrue(text.contains("needs a line name"), text)
        }
        writeFile(etc + "/x.json", base.replacingOccurrences(of: #""boards""#, with: #""status_led":"gpiochip4:x","boards""#))
        XCTAssertThrowsError(try loader.load("x")) { error in
            let text = String(describing: error)
            XCTAssertTrue(text.hasPrefix("malformed board profile \(etc)/x.json: "), text)
            XCTAssertTrue(text.contains("at 'status_led'") && text.contains(#"invalid GPIO line "gpiochip4:x""#), text)
            XCTAssertTrue(text.contains("must be a number"), text)
        }
        writeFile(etc + "/x.json", base.replacingOccurrences(of: #""boards""#, with: #""setup_button":17,"boards""#))
        XCTAssertThrowsError(try loader.load("x")) { error in
            let text = String(describing: error)
            XCTAssertTrue(text.contains("at 'setup_button': expected String"), text)
        }
        writeFile(etc + "/x.json", base.replacingOccurrences(of: #""boards""#, with: #""status-led":"GPIO1","boards""#))
        XCTAssertThrowsError(try loader.load("x")) { error in
            XCTAssertTrue(String(describing: error).contains("unknown key 'status-led'"), String(describing: error))
        }
        writeFile(etc + "/x.json", base.replacingOccurrences(of: #""name":"x""#, with: #""name":"y""#))
        XCTAssertThrowsError(try loader.load("x")) { error in
            XCTAssertEqual(error as? BoardProfileError, .nameMismatch(file: etc + "/x.json", declared: "y"))
        }
    }
}
