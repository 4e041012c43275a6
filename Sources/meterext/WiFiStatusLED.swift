import BoardSupport
import DeviceState
import KPM33B
import MeterHardware
import Dispatch
import Platform
import Synchronization

/// The board profile's status LED (`status_led`), driven by `StatusLEDDriver`: fast blink while the set-up access
/// point is open, on with a blip while every meter answers, double blink while one does not (issues 13, 17).
final class GPIOStatusLine: OutputLine, @unchecked Sendable {
    // The handle is only touched under the lock: the driver ticks from one task, `close` comes from another.
    private let line: Mutex<GPIOOutputLine?>

    init(_ line: GPIOOutputLine) { self.line = Mutex(line) }

    func set(_ on: Bool) throws {
        try line.withLock { l in try l?.set(on) }
    }
}

enum WiFiStatusLED {

    /// How often the LED pattern advances (the housekeeping thread's round when the board has an LED).
    static let periodNanos: UInt64 = 50_000_000

    /// Requests the profile's LED line and returns the housekeeping duty that drives it (every round of
    /// `periodNanos`; dark when the service stops); nil without an LED in the profile, or when the line cannot be
    /// had (the service runs on without it, and says why once).
    static func duty(profile: BoardProfile?, wifi: WiFiManager, pollers: [MeterPoller], log: Logger) -> Housekeeping.Duty? {
        guard let spec = profile?.statusLED else { return nil }
        let output: GPIOOutputLine
        do { output = try GPIOOutputLine(spec, initialValue: false, consumer: "meterext-led") } catch {
            log.warning("status LED \(spec): \(error); running without it")
            return nil
        }
        log.info("status LED on \(output.chipPath):\(output.offset)")
        let driver = StatusLEDDriver(line: GPIOStatusLine(output), logger: log)
        return Housekeeping.Duty(every: 1, run: {
            let answering = pollers.reduce(0) { $0 + ($1.snapshot().health == .online ? 1 : 0) }
            driver.ledState = .showing(accessPointOpen: wifi.accessPointIsOpen, answering: answering, of: pollers.count)
            driver.tick()
        }, atStop: {
            driver.ledState = .off
            driver.tick()
        })
    }
}

/// The board profile's set-up button (`setup_button`) as an edge source for `SetupButtonWatcher`.
final class GPIOButtonSource: ButtonEdgeSource {
    let line: GPIOButtonLine
    init(_ line: GPIOButtonLine) { self.line = line }
    func nextEdge(timeoutMs: Int32) throws -> Bool? {
        try line.waitEdge(timeoutMs: timeoutMs).map { $0 == .pressed }
    }
}

enum WiFiSetupButton {
    /// Requests the profile's button line and starts watching it; a press opens the set-up access point (on the
    /// WiFi queue, never on the watcher's thread). nil without a button, or when the line cannot be had.
    static func start(profile: BoardProfile?, wifi: WiFiManager, queue: DispatchQueue, log: Logger) -> SetupButtonWatcher? {
        guard let spec = profile?.setupButton else { return nil }
        let line: GPIOButtonLine
        do { line = try GPIOButtonLine(spec) } catch {
            log.warning("set-up button \(spec): \(error); running without it")
            return nil
        }
        let watcher = SetupButtonWatcher(source: GPIOButtonSource(line), log: { log.warning($0) }) {
            queue.async { wifi.setupButtonPressed(now: MonotonicClock.nowSeconds()) }
        }
        do { try watcher.start() } catch {
            log.warning("set-up button: cannot start its thread: \(error)")
            return nil
        }
        log.info("set-up button on \(line.chipPath):\(line.offset)")
        return watcher
    }
}
