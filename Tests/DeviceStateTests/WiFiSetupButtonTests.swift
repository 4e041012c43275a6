import Synchronization
import XCTest

@testable import DeviceState

/// The set-up button without a GPIO chip: the debouncer with synthetic time, and the watcher with a scripted edge
/// source driving a real `WiFiManager` (issue 13).
final class WiFiSetupButtonTests: XCTestCase {
    func testBouncesAndAHeldButtonCountOnce() {
        var d = SetupButtonDebouncer(lockout: 0.3)
        // One press with contact bounce: down, up, down within a few ms, then released.
        XCTAssertEqual([(true, 10.000), (false, 10.002), (true, 10.004), (false, 10.5)].map { d.edge(pressed: $0.0, at: $0.1) },
                       [true, false, false, false])
        // A second press well after the first counts.
        XCTAssertTrue(d.edge(pressed: true, at: 11.0))
        // Pressed twice without a release edge in between (a lost edge): no repeat.
        XCTAssertFalse(d.edge(pressed: true, at: 20.0))
        XCTAssertFalse(d.edge(pressed: false, at: 20.1))
        XCTAssertTrue(d.edge(pressed: true, at: 20.2))
    }

    final class Script: ButtonEdgeSource, @unchecked Sendable {
        var edges: [Bool?]
        init(_ edges: [Bool?]) { self.edges = edges }
        func nextEdge(timeoutMs: Int32) throws -> Bool? {
            guard !edges.isEmpty else { throw WiFiBackendError("line gone") }
            return edges.removeFirst()
        }
    }

    func testAPressOpensTheAccessPointOnce() throws {
        let store = try StateStore(directory: makeTemporaryDirectory(self))
        try store.updateConfig { $0.wifi = WiFiClientConfig(ssid: "HomeNet", password: Secret("homenet-pass")) }
        let runtime = WiFiRuntime(directory: makeTemporaryDirectory(self))
        _ = runtime.claimBoot()  // a service restart, not a boot: the access point stays closed at start
        let sim = SimulatedWiFiBackend()
        let wifi = WiFiManager(backend: sim, store: store, runtime: runtime)
        wifi.start(now: 0)
        XCTAssertFalse(wifi.accessPointIsOpen)
        XCTAssertEqual(wifi.status(now: 0).link.state, .connected)

        let clock = Mutex(100.0)
        let presses = Atomic<Int>(0)
        let watcher = SetupButtonWatcher(source: Script([nil, true, false, true, false, nil]),
                                         now: { clock.withLock { $0 += 0.01; return $0 } }) {
            presses.add(1, ordering: .relaxed)
            wifi.setupButtonPressed(now: 100)
        }
        for _ in 0..<6 { try watcher.step() }
        XCTAssertEqual(presses.load(ordering: .relaxed), 1, "the bounce within the lockout counted twice")
        XCTAssertTrue(wifi.accessPointIsOpen)
        XCTAssertEqual(wifi.status(now: 100).accessPointReason, .button)
        XCTAssertEqual(wifi.status(now: 100).accessPoint.closesInSeconds, 600)
        XCTAssertThrowsError(try watcher.step(), "a line that is gone is an error the loop reports")
    }
}
