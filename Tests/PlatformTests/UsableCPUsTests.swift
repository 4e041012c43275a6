import Glibc
import Platform
import XCTest

final class UsableCPUsTests: XCTestCase {
    func testTheAffinityMaskNarrowsTheSystemCount() {
        XCTAssertEqual(UsableCPUs.threads(systemCount: 4, affinity: 1), 1)
        XCTAssertEqual(UsableCPUs.threads(systemCount: 2, affinity: 8), 2)  // a cgroup quota below the mask wins
        XCTAssertEqual(UsableCPUs.threads(systemCount: 4, affinity: nil), 4)
        XCTAssertEqual(UsableCPUs.threads(systemCount: 0, affinity: 0), 1)
    }

    func testTheMaskIsReadFromTheKernel() {
        // Narrowing the mask is tested end to end (Tests/hostile/test_http.py, under a one-CPU affinity); here: the
        // kernel answers, with at least one and at most the online CPUs.
        let online = sysconf(Int32(_SC_NPROCESSORS_ONLN))
        XCTAssertEqual(UsableCPUs.inAffinityMask().map { (1...online).contains($0) }, true)
    }
}
