import FirmwareUpdate
import XCTest

/// Issue 12: the anti-rollback order of versions and the outgoing address policy, without any network.
final class FirmwareVersionTests: XCTestCase {
    func testOrder() {
        let ordered = ["0.0.9", "0.1.0-rc.1", "0.1.0", "0.1.1", "0.2", "0.10.0", "1.0.0-alpha", "1.0.0-alpha.1",
                       "1.0.0-beta", "1.0.0", "1.0.1", "2.0.0", "10.0.0"]
        for (a, b) in zip(ordered, ordered.dropFirst()) {
            XCTAssertLessThan(FirmwareVersion(a), FirmwareVersion(b), "\(a) < \(b)")
            XCTAssertFalse(FirmwareVersion(b) < FirmwareVersion(a), "\(b) < \(a)")
        }
        XCTAssertEqual(FirmwareVersion("1.2"), FirmwareVersion("1.2.0"))
        XCTAssertEqual(FirmwareVersion("1.2.0+build.7"), FirmwareVersion("1.2.0"))
        XCTAssertEqual(FirmwareVersion("01.2"), FirmwareVersion("1.2"))
    }
}

final class OutgoingAddressPolicyTests: XCTestCase {
    let own: Set<IPAddress> = [IPAddress("192.168.1.50")!, IPAddress("fd00::50")!]

    func refused(_ text: String) -> Bool {
        OutgoingAddressPolicy.board.refusal(for: IPAddress(text)!, ownAddresses: { self.own }) != nil
    }

    func testRefused() {
        for a in ["127.0.0.1", "127.255.0.9", "0.0.0.0", "169.254.169.254", "169.254.0.1", "224.0.0.1",
                  "255.255.255.255", "::1", "::", "fe80::1", "febf::1", "ff02::1", "::ffff:127.0.0.1",
                  "::ffff:169.254.169.254", "::127.0.0.1", "192.168.1.50", "::ffff:192.168.1.50", "fd00::50"] {
            XCTAssertTrue(refused(a), a)
        }
    }

    func testAllowed() {
        for a in ["192.168.1.51", "10.0.0.1", "172.16.5.5", "8.8.8.8", "169.253.1.1", "fd00::51", "fec0::1",
                  "2001:db8::1", "::ffff:10.0.0.1"] {
            XCTAssertFalse(refused(a), a)
        }
        XCTAssertNil(OutgoingAddressPolicy.unrestricted.refusal(for: IPAddress("127.0.0.1")!, ownAddresses: { [] }))
    }

    func testTheBoardsOwnAddressesAreReadFromItsInterfaces() {
        XCTAssertTrue(IPAddress.ownAddresses().contains(IPAddress("127.0.0.1")!))
    }
}
