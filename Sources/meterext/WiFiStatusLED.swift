import BoardSupport
import DeviceState
import KPM33B
import MeterHardware
import Synchronization

/// The board profile's status LED (`status_led`), driven by `StatusLEDDriver`: fast blink while the set-up access
/// point is open, on with a blip while the meter answers, double blink while it does not (issue 13).
final class GPIOStatusLine: OutputLine, @unchecked Sendable {
    // The handle is only touched under the lock: the driver ticks from one task, `close` comes from another.
    private let line: Mutex<GPIOOutputLine?>

    init(_ line: GPIOOutputLine) { self.line = Mutex(line) }

    func set(_ on: Bool) throws {
        try line.withLock { l in try l?.set(on) }
    }
}

enum WiFiStatusLED {
    /// What the LED shows for these facts.
    static func state(accessPointOpen: Bool, meter: LinkHealth) -> StatusLEDState {
        if accessPointOpen { return .setup }
        return meter == .online ? .meterOnline : .meterOffline
    }

    /// Requests the profile's LED line and returns the task that drives it; nil without an LED in the profile, or
    /// when the line cannot be had (the service runs on without it, and says why once).
    static func start(profile: BoardProfile?, wifi: WiFiManager, poller: MeterPoller, log: Logger) -> Task<Void, Never>? {
        guard let spec = profile?.statusLED else { return nil }
        let output: GPIOOutputLine
        do { output = try GPIOOutputLine(spec, initialValue: false, consumer: "meterext-led") } catch {
            log.warning("status LED \(spec): \(error); running without it")
            return nil
        }
        log.info("status LED on \(output.chipPath):\(output.offset)")
        let driver = StatusLEDDriver(line: GPIOStatusLine(output), logger: log)
        return Task.detached {
            while !Task.isCancelled {
                driver.ledState = state(accessPointOpen: wifi.accessPointIsOpen, meter: poller.snapshot().health)
                driver.tick()
                try? await Task.sleep(nanoseconds: 50_000_000)
            }
            driver.ledState = .off
            driver.tick()
        }
    }
}
