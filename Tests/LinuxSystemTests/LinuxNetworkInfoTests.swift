@testable import LinuxSystem
import XCTest

final class LinuxNetworkInfoTests: XCTestCase {
    func testLinuxNetworkInfoParsesTheRouteTable() {
        let table = """
            Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
            wlan0\t00000000\t0100A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0
            eth0\t00000000\t010200C0\t0003\t0\t0\t100\t00000000\t0\t0\t0
            eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
            """
        XCTAssertEqual(LinuxNetworkInfo.parseDefaultRoute(table),
                       LinuxNetworkInfo.DefaultRoute(interface: "eth0", gateway: "192.0.2.1"))
        XCTAssertNil(LinuxNetworkInfo.parseDefaultRoute("Iface\tDestination\n"))
    }

    /// The real implementation on this machine: whatever interface it picks must exist in getifaddrs.
    func testLinuxNetworkInfoOnThisMachine() throws {
        let addresses = LinuxNetworkInfo.ipv4Addresses()
        XCTAssertTrue(addresses.contains { $0.interface == "lo" && $0.address == "127.0.0.1" && $0.netmask == "255.0.0.0" },
                      "\(addresses)")
        let info = try XCTUnwrap(LinuxNetworkInfo().ipInfo())
        XCTAssertTrue(addresses.contains { $0.interface == info.interface && $0.address == info.address })
        if let route = LinuxNetworkInfo.readFile("/proc/net/route").flatMap(LinuxNetworkInfo.parseDefaultRoute) {
            XCTAssertEqual(info.interface, route.interface)
            XCTAssertEqual(info.gateway, route.gateway)
            XCTAssertEqual(LinuxNetworkInfo().macAddress()?.split(separator: ":").count, 6)
        }
    }
}
