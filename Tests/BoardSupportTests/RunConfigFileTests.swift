import Platform
import FoundationEssentials
import XCTest
@testable import BoardSupport

final class RunConfigFileTests: XCTestCase {
    func decode(_ json: String) throws -> RunConfigFile {
        try RunConfigFile.decode(Data(json.utf8), file: "test.json")
    }

    func testShippedDefaultConfig() throws {
        let config = try RunConfigFile.load(path: repoRoot + "/board/meterext.json")
        XCTAssertEqual(config, RunConfigFile(
            baud: 9600, parity: .even, address: 1, listen: ListenAddress(host: "0.0.0.0", port: 80),
            stateDir: "/var/lib/meterext", wifi: .networkmanager, logLevel: .info))
        XCTAssertNil(config.board)
    }

    func testEveryKeyIsOptionalAndParsed() throws {
        XCTAssertEqual(try decode("{}"), RunConfigFile())
        let config = try decode("""
            {"serial":"/dev/ttyUSB0","baud":19200,"parity":"none","address":247,"direction":"gpio:gpiochip0:17",
             "listen":"[::]:8080","state_dir":"/srv/m","wifi":"sim","board":"usb-rs485","log_level":"debug"}
            """)
        XCTAssertEqual(config.direction, .gpio(.chipOffset(chip: "gpiochip0", offset: 17)))
        XCTAssertEqual(config.listen, ListenAddress(host: "::", port: 8080))
        XCTAssertEqual(config.listen?.description, "[::]:8080")
        XCTAssertEqual(config.parity, RunConfigFile.Parity.none)
        XCTAssertEqual(config.logLevel, .debug)
        XCTAssertEqual(config.board, "usb-rs485")
    }

    func testErrorsNameTheFileTheKeyAndTheProblem() {
        let cases: [(String, String)] = [
            (#"{"baudrate":9600}"#, "unknown key 'baudrate'"),
            (#"{"baud":115200}"#, "at 'baud': 115200 is not a KPM33B baud rate"),
            (#"{"address":0}"#, "at 'address': 0 is not a Modbus slave address"),
            (#"{"parity":"mark"}"#, "at 'parity'"),
            (#"{"direction":"auto"}"#, #"at 'direction': invalid direction control "auto": unknown mode"#),
            (#"{"direction":"gpio:17"}"#, "at 'direction'"),
            (#"{"direction":17}"#, "at 'direction': expected String"),
            (#"{"listen":"80"}"#, "invalid listen address '80'"),
            (#"{"listen":"host:0"}"#, "invalid listen address 'host:0'"),
            (#"{"log_level":"verbose"}"#, "unknown log level 'verbose'"),
            (#"{"state_dir":"var/lib"}"#, "must be an absolute path"),
            (#"{"baud":"9600"}"#, "at 'baud': expected Int"),
            (#"{"baud":9600"#, "malformed config file test.json"),
        ]
        for (json, expected) in cases {
            XCTAssertThrowsError(try decode(json), json) { error in
                let text = String(describing: error)
                XCTAssertTrue(text.hasPrefix("malformed config file test.json: "), text)
                XCTAssertTrue(text.contains(expected), "\(json): \(text)")
            }
        }
    }

    func testMissingFileSaysWhichAndWhy() {
        XCTAssertThrowsError(try RunConfigFile.load(path: "/nonexistent/meterext.json")) { error in
            XCTAssertEqual(String(describing: error), "cannot read /nonexistent/meterext.json: No such file or directory")
        }
    }
}
