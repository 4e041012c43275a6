import Dispatch
import XCTest
@testable import BoardSupport

final class LogTests: XCTestCase {
    func testFormats() {
        XCTAssertEqual(LogStyle.journal.format(.error, "meter timeout"), "<3>meter timeout\n")
        XCTAssertEqual(LogStyle.journal.format(.warning, "w"), "<4>w\n")
        XCTAssertEqual(LogStyle.journal.format(.info, "i"), "<6>i\n")
        XCTAssertEqual(LogStyle.journal.format(.debug, "two\nlines"), "<7>two lines\n")
        XCTAssertEqual(LogStyle.plain.format(.warning, "w"), "warning: w\n")
    }

    func testJournalStyleOnlyWhenStderrIsTheJournalStream() {
        XCTAssertEqual(LogStyle.detect(environment: { _ in nil }), .plain)
        XCTAssertEqual(LogStyle.detect(environment: { _ in "garbage" }), .plain)
        var st = stat()
        XCTAssertEqual(fstat(STDERR_FILENO, &st), 0)
        let mine = "\(st.st_dev):\(st.st_ino)"
        XCTAssertEqual(LogStyle.detect(environment: { $0 == "JOURNAL_STREAM" ? mine : nil }), .journal)
        XCTAssertEqual(LogStyle.detect(environment: { $0 == "JOURNAL_STREAM" ? "\(st.st_dev):\(st.st_ino + 1)" : nil }), .plain)
    }

    func testLevelParsingAndThreshold() throws {
        XCTAssertEqual(try LogLevel(parsing: "WARNING"), .warning)
        XCTAssertEqual(try LogLevel(parsing: "warn"), .warning)
        XCTAssertEqual(try LogLevel(parsing: "debug"), .debug)
        XCTAssertThrowsError(try LogLevel(parsing: "trace")) { error in
            XCTAssertEqual(String(describing: error), "unknown log level 'trace' (expected one of: error, warning, info, debug)")
        }
        let sink = RecordingSink()
        let logger = Logger(level: .warning, style: .journal, sink: sink)
        logger.debug("d")
        logger.info("i")
        logger.warning("w")
        logger.error("e")
        XCTAssertEqual(sink.lines, ["<4>w\n", "<3>e\n"])
        XCTAssertFalse(logger.isEnabled(.info))
        logger.level = .debug
        logger.debug("d")
        XCTAssertEqual(sink.lines.last, "<7>d\n")
    }

    func testRepeatedFailuresAreSummarisedAndRecoveryIsReported() {
        let clock = ManualClock()
        let sink = RecordingSink()
        let logger = Logger(level: .info, style: .journal, sink: sink, repeatInterval: .seconds(60), now: clock.now)

        logger.recovered(key: "meter", "meter answers")  // nothing running: silent
        for _ in 0..<100 {
            logger.failure(key: "meter", "meter: no reply from address 1")
            clock.advance(.milliseconds(500))
        }
        // 100 failures over 50 s: only the first is written.
        XCTAssertEqual(sink.lines, ["<3>meter: no reply from address 1\n"])
        logger.failure(key: "other", level: .warning, "wifi: scan failed")
        clock.advance(.seconds(10))
        logger.failure(key: "meter", "meter: CRC error")
        XCTAssertEqual(sink.lines.count, 3)
        XCTAssertEqual(sink.lines[1], "<4>wifi: scan failed\n")
        XCTAssertEqual(sink.lines[2], "<3>meter: CRC error (repeated 100 times)\n")
        XCTAssertEqual(logger.activeFailures, ["meter", "other"])

        logger.failure(key: "meter", "meter: CRC error")
        logger.recovered(key: "meter", "meter answers again")
        XCTAssertEqual(sink.lines.last, "<6>meter answers again (after 102 failures)\n")
        XCTAssertEqual(logger.activeFailures, ["other"])
        logger.failure(key: "meter", "meter: no reply")
        XCTAssertEqual(sink.lines.last, "<3>meter: no reply\n", "a new episode starts with a full line")
    }

    func testConcurrentWritersNeitherLoseNorSplitLines() {
        let sink = RecordingSink()
        let logger = Logger(level: .info, style: .journal, sink: sink)
        DispatchQueue.concurrentPerform(iterations: 8) { worker in
            for i in 0..<200 {
                logger.info("worker \(worker) line \(i)")
                logger.failure(key: "k\(worker)", "f")
            }
        }
        XCTAssertEqual(sink.lines.count, 8 * 200 + 8)
        XCTAssertTrue(sink.lines.allSatisfy { $0.hasPrefix("<") && $0.hasSuffix("\n") })
    }
}
