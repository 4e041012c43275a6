import Platform
import ArgumentParser
import Glibc
import KPM33B
import MeterHardware
import ModbusCore

struct SimulateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "simulate",
        abstract: "Run the built-in KPM33B simulator as a Modbus RTU slave on a serial device.",
        discussion: """
            Behaves like the meter: the whole register map, the relay coil, parameter writes, exception 02 for \
            unmapped addresses, values that move plausibly (energy only grows, power follows load). Use it on one \
            end of a socat pty pair or a USB adapter to test a master. --faults injects bus faults for soak tests.
            """)

    @Option(help: ArgumentHelp("Serial device to serve on.", valueName: "path"))
    var serial: String

    @Option(help: "Baud rate (ignored by pseudo-terminals).")
    var baud: Int = 9600

    @Option(help: ArgumentHelp("Parity: even, odd or none. Pseudo-terminals need none.", valueName: "even|odd|none"))
    var parity: LineSettings.Parity = .none

    @Option(help: ArgumentHelp("Modbus address to answer, 1–247; several meters on one bus as a list, e.g. 1,2,3 (each with its own serial number).",
                               valueName: "n[,n…]"), transform: OptionValue.addresses)
    var address: [UInt8] = [1]

    @Option(help: ArgumentHelp("Fault probabilities per reply, e.g. crc=0.05,silence=0.02,late=0.01,garbage=0.02,trailing=0.02,exception=0.01,split=0.1",
                               valueName: "list"))
    var faults: String = ""

    func run() throws {
        let line = LineSettings(baud: baud, parity: parity)
        let port = try SerialPort(path: serial, line: line)
        let bus = SimulatedBus(units: address)
        let start = MonotonicClock.nowNanos()
        let slave = RTUSlave(channel: port, timing: line.timing, faults: try SlaveFaults(parsing: faults)) {
            request, reply in
            bus.handle(request, now: Double(MonotonicClock.nowNanos() - start) / 1e9, into: reply)
        }
        slave.afterReply = { bus.commitPendingAddresses() }
        let meters = bus.meters.map { "address \($0.unit) (serial \($0.serialNumber))" }.joined(separator: ", ")
        print("KPM33B simulator: \(meters) on \(serial), \(line)")
        fflush(stdout)
        try slave.run()
    }
}

