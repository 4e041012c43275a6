import ModbusCore

/// Several simulated KPM33B meters on one line (issue 17), each with its own address and serial number: a request
/// is answered by the meter at its address and the others stay silent, as on an RS485 bus. Used by `meterext run
/// --simulate` (in process) and `meterext simulate` (on a serial device).
public final class SimulatedBus {
    public let meters: [SimulatedMeter]

    /// `units`: distinct addresses 1–247.
    public init(units: [UInt8]) {
        meters = units.map { SimulatedMeter(unit: $0, serialNumber: SimulatedMeter.serialNumber(forUnit: $0)) }
    }

    /// The reply of the meter at `request.unit` (its length in `reply`); 0 when no meter has that address.
    public func handle(_ request: ModbusRequest, now: Double, into reply: UnsafeMutableRawBufferPointer) -> Int {
        for meter in meters where meter.unit == request.unit { return meter.handle(request, now: now, into: reply) }
        return 0
    }

    /// After each reply went out: a meter whose address was written answers at the new one from now on.
    public func commitPendingAddresses() {
        for meter in meters { meter.commitPendingAddress() }
    }
}
