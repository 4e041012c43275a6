import XCTest
import Glibc
@testable import History

final class HistoryStoreTests: XCTestCase {
    var dir = ""
    override func setUp() {
        var template = Array("/tmp/history-test-XXXXXX".utf8CString)
        dir = String(cString: mkdtemp(&template))
    }
    override func tearDown() { _ = system("rm -rf '\(dir)'") }

    func testSkeletonOpens() throws {
        let store = try HistoryStore(path: dir + "/history.sqlite")
        XCTAssertEqual(try store.lastSeq(meter: 1), 0)
    }
}
