import Platform
import ArgumentParser
import KPM33B
import MeterHardware
import ModbusCore

/// Port → direction control → RTU master → poller, built from merged link settings.
final class MeterConnection {
    let settings: LinkSettings
    let port: SerialPort
    let master: RTUMaster
    let poller: MeterPoller

    init(_ settings: LinkSettings, plan: PollPlan = PollPlan()) throws(SystemError) {
        self.settings = settings
        port = try SerialPort(path: settings.serial, line: settings.line)
        let direction = try settings.direction.makeControl(for: port)
        let rs485 = RS485Port(port: port, direction: direction, timing: settings.line.timing)
        master = RTUMaster(
            port: rs485, timing: settings.line.timing,
            configuration: .init(responseTimeoutNanos: UInt64(settings.responseTimeoutMs) * 1_000_000),
            retry: RetryPolicy(attempts: settings.retries))
        poller = MeterPoller(client: master, unit: settings.address, plan: plan,
                             lineDescription: settings.description)
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
/// with the real serial code, so `run --simulate` exercises the same path as a board with a meter.
final class InProcessSimulator {
    let pty: PTYPair
    let meter: SimulatedMeter
    let slave: RTUSlave
    private var thread: OSThread?

    var path: String { pty.slavePath }

    init(unit: UInt8, faults: SlaveFaults = SlaveFaults()) throws(SystemError) {
        pty = try PTYPair()
        let meter = SimulatedMeter(unit: unit)
        self.meter = meter
        let start = MonotonicClock.nowNanos()
        slave = RTUSlave(channel: pty, timing: LineSettings(baud: 9600, parity: .none).timing, faults: faults) {
            request, reply in
            meter.handle(request, now: Double(MonotonicClock.nowNanos() - start) / 1e9, into: reply)
        }
        slave.afterReply = { meter.commitPendingAddress() }
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
