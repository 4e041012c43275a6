import Platform
import ArgumentParser
import KPM33B
import MeterHardware
import ModbusCore

/// Port → direction control → RTU master → one poller per meter address → the bus that schedules them.
final class MeterConnection {
    let settings: LinkSettings
    let port: SerialPort
    let master: RTUMaster
    /// The first meter (what the one-meter commands use).
    let poller: MeterPoller
    /// Every meter on the bus, in address-list order (issue 17).
    let pollers: [MeterPoller]
    /// The one poll thread over all of them; `run` starts it.
    let bus: MeterBus

    init(_ settings: LinkSettings, plan: PollPlan = PollPlan()) throws(SystemError) {
        self.settings = settings
        port = try SerialPort(path: settings.serial, line: settings.line)
        let direction = try settings.direction.makeControl(for: port)
        let rs485 = RS485Port(port: port, direction: direction, timing: settings.line.timing)
        master = RTUMaster(
            port: rs485, timing: settings.line.timing,
            configuration: .init(responseTimeoutNanos: UInt64(settings.responseTimeoutMs) * 1_000_000),
            retry: RetryPolicy(attempts: settings.retries))
        let master = self.master
        pollers = settings.addresses.map {
            MeterPoller(client: master, unit: $0, plan: plan, lineDescription: settings.description(address: $0))
        }
        poller = pollers[0]
        bus = MeterBus(client: master, meters: pollers)
        if pollers.count > 1 {
            // Issue 17: a failing meter gets one attempt per request (see MeterBus.setAttempts).
            bus.configuredAttempts = settings.retries
            bus.setAttempts = { [master] in master.retry = RetryPolicy(attempts: $0) }
        }
    }
}

extension MeterConnection {
    /// For the installer commands: the connection, or a plain-language reason and exit code 6.
    static func openForCommand(_ settings: LinkSettings) throws -> MeterConnection {
        do {
            return try MeterConnection(settings)
        } catch {
            printError("cannot open \(settings.serial): \(error)")
            throw ExitStatus.serialPort.exit
        }
    }
}

/// The KPM33B simulator running in this process on one end of a pty pair; the gateway opens the other end
/// with the real serial code, so `run --simulate` exercises the same path as a board with a meter. With several
/// addresses every one is a meter of its own on the same line (issue 17).
final class InProcessSimulator {
    let pty: PTYPair
    let slave: RTUSlave
    private var thread: OSThread?

    var path: String { pty.slavePath }

    convenience init(unit: UInt8, faults: SlaveFaults = SlaveFaults()) throws(SystemError) {
        try self.init(units: [unit], faults: faults)
    }

    init(units: [UInt8], faults: SlaveFaults = SlaveFaults()) throws(SystemError) {
        pty = try PTYPair()
        let bus = SimulatedBus(units: units)
        let start = MonotonicClock.nowNanos()
        slave = RTUSlave(channel: pty, timing: LineSettings(baud: 9600, parity: .none).timing, faults: faults) {
            request, reply in
            bus.handle(request, now: Double(MonotonicClock.nowNanos() - start) / 1e9, into: reply)
        }
        slave.afterReply = { bus.commitPendingAddresses() }
    }

    func start() throws(SystemError) {
        let slave = self.slave
        thread = try OSThread(name: "meterext-sim") {
            do { try slave.run() } catch { printError("simulator stopped: \(error)") }
        }
    }

    func stop() {
        slave.stop()
        thread?.join()
    }
}

extension PTYPair: ByteChannel {
    public func receive(into buffer: UnsafeMutableRawBufferPointer, timeoutNanos: UInt64) throws(SystemError) -> Int {
        try readMaster(into: buffer, timeoutNanos: timeoutNanos)
    }

    public func transmit(_ bytes: UnsafeRawBufferPointer) throws(SystemError) {
        _ = try writeMaster(bytes)
    }
}

extension SerialPort: ByteChannel {
    public func receive(into buffer: UnsafeMutableRawBufferPointer, timeoutNanos: UInt64) throws(SystemError) -> Int {
        try read(into: buffer, timeoutNanos: timeoutNanos)
    }

    public func transmit(_ bytes: UnsafeRawBufferPointer) throws(SystemError) {
        _ = try write(bytes)
        try drain()
    }
}
