import ModbusCore

/// A KPM33B in software: the whole register map, the relay coil, parameter writes, exceptions for unmapped
/// addresses, and values that move plausibly (power follows a load profile, energy only grows).
///
/// Pure: time comes in as an argument, replies go into caller-owned buffers. `RTUSlave` puts it on a serial line.
public final class SimulatedMeter {
    /// What the simulated installation looks like. Tests and scenarios change it between requests.
    public struct Scenario: Sendable {
        /// Phase-to-neutral voltages, V.
        public var voltage: (Float, Float, Float) = (230.4, 229.8, 231.1)
        /// Load per phase, W, while the relay is closed. Negative = export (e.g. PV).
        public var load: (Float, Float, Float) = (820, 640, 1210)
        /// Power factor per phase.
        public var powerFactor: (Float, Float, Float) = (0.97, 0.95, 0.98)
        public var frequency: Float = 50.0
        /// Adds a slow ±10 % wobble to the load and ±1 V to the voltage, so readings move like a real site.
        public var wobble = true

        public init() {}
    }

    public var scenario = Scenario()
    public private(set) var unit: UInt8
    public let serialNumber: String

    /// Holding registers 0x0000…0x0205.
    private var registers = [UInt16](repeating: 0, count: 0x0206)
    private var relayClosed = true
    private var lastUpdate: Double?
    /// Energies in kWh / kvarh, integrated from power.
    private var forwardActive: [Double] = [1234.5, 987.25, 1520.75]
    private var reverseActive: [Double] = [12.5, 3.25, 0.5]
    private var forwardReactive: [Double] = [210.5, 180.25, 300.0]
    private var reverseReactive: [Double] = [20.0, 15.5, 9.75]
    private var tariffActive: [Double] = [640.0, 1510.5, 1100.0, 560.0]
    private var tariffReactive: [Double] = [90.0, 240.5, 180.0, 230.0]
    private var seed: UInt32 = 0x2545_F491

    /// Address ranges that answer FC03; anything else is exception 02 (illegal data address), like the meter.
    public static let mappedRanges: [ClosedRange<UInt16>] = [
        0x0000...0x0002, 0x000C...0x000F, 0x0012...0x0021, 0x0023...0x0026,
        0x0030...0x0063, 0x0068...0x009B, 0x009C...0x019F, 0x0200...0x0205,
    ]
    /// Parameter words a master may write with FC16.
    static let writable: [ClosedRange<UInt16>] = [
        0x0000...0x0002, 0x000C...0x000C, 0x000E...0x000F, 0x001B...0x001E, 0x0020...0x0021, 0x0023...0x0026,
    ]

    /// A distinct 13-character serial number per address, the default one for address 1 (issue 17: several
    /// simulated meters on one line).
    public static func serialNumber(forUnit unit: UInt8) -> String {
        let digits = String(unit)
        return "33B0000126" + String(repeating: "0", count: 3 - digits.count) + digits
    }

    public init(unit: UInt8 = 1, serialNumber: String = "33B0000126001", clock: MeterClock? = nil) {
        self.unit = unit
        self.serialNumber = serialNumber
        registers[Int(KPM33BMap.password)] = 6666
        registers[Int(KPM33BMap.modbusAddress)] = UInt16(unit)
        registers[Int(KPM33BMap.lineSettings)] = 0x0003 // 9600, 8E1
        registers[Int(KPM33BMap.controlMode)] = KPM33BMap.controlModeRemote
        registers[Int(KPM33BMap.loadThreshold)] = 12 // kW
        registers[Int(KPM33BMap.wirelessStatus)] = 0x0000
        var sn = Array(serialNumber.utf8.prefix(14))
        while sn.count < 14 { sn.append(0) }
        for i in 0..<7 {
            registers[Int(KPM33BMap.serialNumber) + i] = UInt16(sn[2 * i]) << 8 | UInt16(sn[2 * i + 1])
        }
        setClock(clock ?? MeterClock(year: 26, month: 11, day: 21, hour: 0, minute: 0, second: 0))
        writeFloat(KPM33BMap.prepaidEnergy, 0)
        writeFloat(KPM33BMap.overdraft, 0)
        fillHistory()
        refresh(elapsed: 0)
    }

    // MARK: state

    public var isRelayClosed: Bool { relayClosed }
    public func setRelay(closed: Bool) { relayClosed = closed }

    public var controlModeWord: UInt16 {
        get { registers[Int(KPM33BMap.controlMode)] }
        set { registers[Int(KPM33BMap.controlMode)] = newValue }
    }

    public var loadThresholdKW: UInt16 {
        get { registers[Int(KPM33BMap.loadThreshold)] }
        set { registers[Int(KPM33BMap.loadThreshold)] = newValue }
    }

    public func register(_ address: UInt16) -> UInt16 { registers[Int(address)] }

    public func float(_ register: FloatRegister) -> Float {
        Float(bitPattern: UInt32(registers[Int(register.address)]) << 16 | UInt32(registers[Int(register.address) + 1]))
    }

    public func setClock(_ c: MeterClock) {
        let base = Int(KPM33BMap.clock)
        registers[base] = UInt16(c.year % 100) << 8 | UInt16(c.month)
        registers[base + 1] = UInt16(c.day) << 8 | UInt16(c.hour)
        registers[base + 2] = UInt16(c.minute) << 8 | UInt16(c.second)
    }

    // MARK: Modbus

    /// Answers one request at monotonic time `now` (seconds). Returns the reply length, or 0 when the meter
    /// stays silent (a request for another unit, or a broadcast).
    public func handle(_ request: ModbusRequest, now: Double, into reply: UnsafeMutableRawBufferPointer) -> Int {
        guard request.unit == unit else { return 0 }
        advance(to: now)
        let fc = request.function.rawValue
        switch request.function {
        case .readHoldingRegisters:
            guard request.quantity >= 1, request.quantity <= ModbusLimits.maxReadRegisters else {
                return SlaveCodec.encodeException(unit: unit, function: fc, code: .illegalDataValue, into: reply)
            }
            let last = UInt32(request.start) + UInt32(request.quantity) - 1
            guard last <= 0xFFFF, Self.isMapped(request.start, UInt16(last)) else {
                return SlaveCodec.encodeException(unit: unit, function: fc, code: .illegalDataAddress, into: reply)
            }
            return SlaveCodec.encodeRegisters(unit: unit, count: Int(request.quantity), into: reply) {
                self.registers[Int(request.start) + $0]
            }
        case .readCoils:
            guard request.start == KPM33BMap.relayCoil, request.quantity >= 1, request.quantity <= 8 else {
                return SlaveCodec.encodeException(unit: unit, function: fc, code: .illegalDataAddress, into: reply)
            }
            // Like the manual's example: the data byte carries all three phase bits whatever the quantity.
            var w = ADUWriter(reply)
            w.byte(unit)
            w.byte(fc)
            w.byte(1)
            w.byte(relayClosed ? 0x07 : 0x00)
            return w.finishWithCRC()
        case .writeSingleCoil:
            guard request.start == KPM33BMap.relayCoil else {
                return SlaveCodec.encodeException(unit: unit, function: fc, code: .illegalDataAddress, into: reply)
            }
            guard request.value == 0xFF00 || request.value == 0x0000 else {
                return SlaveCodec.encodeException(unit: unit, function: fc, code: .illegalDataValue, into: reply)
            }
            relayClosed = request.value == 0xFF00
            return SlaveCodec.encodeWriteEcho(request, into: reply)
        case .writeMultipleRegisters:
            let last = UInt32(request.start) + UInt32(request.values.count) - 1
            guard !request.values.isEmpty, last <= 0xFFFF,
                  Self.writable.contains(where: { $0.contains(request.start) && $0.contains(UInt16(last)) }) else {
                return SlaveCodec.encodeException(unit: unit, function: fc, code: .illegalDataAddress, into: reply)
            }
            if let error = applyWrite(start: request.start, values: request.values) {
                return SlaveCodec.encodeException(unit: unit, function: fc, code: error, into: reply)
            }
            return SlaveCodec.encodeWriteEcho(request, into: reply)
        }
    }

    static func isMapped(_ first: UInt16, _ last: UInt16) -> Bool {
        // The range must be covered by mapped runs without holes.
        var address = first
        while address <= last {
            guard let run = mappedRanges.first(where: { $0.contains(address) }) else { return false }
            if run.upperBound >= last { return true }
            address = run.upperBound + 1
        }
        return true
    }

    private func applyWrite(start: UInt16, values: [UInt16]) -> ExceptionCode? {
        for (i, value) in values.enumerated() {
            let address = start + UInt16(i)
            switch address {
            case KPM33BMap.modbusAddress where value < 1 || value > 247:
                return .illegalDataValue
            case KPM33BMap.controlMode where value != KPM33BMap.controlModeLocal && value != KPM33BMap.controlModeRemote:
                return .illegalDataValue
            case KPM33BMap.clearCommand:
                switch value {
                case 0x5578:
                    for i in 0..<3 { forwardActive[i] = 0; reverseActive[i] = 0; forwardReactive[i] = 0; reverseReactive[i] = 0 }
                    for i in 0..<4 { tariffActive[i] = 0; tariffReactive[i] = 0 }
                    refresh(elapsed: 0)
                case 0x5579:
                    writeFloat(KPM33BMap.prepaidEnergy, 0)
                default:
                    return .illegalDataValue
                }
                continue
            default:
                break
            }
            registers[Int(address)] = value
        }
        if values.count >= 1, start <= KPM33BMap.modbusAddress, start + UInt16(values.count) > KPM33BMap.modbusAddress {
            // A new address takes effect after the reply, as on the meter.
            pendingUnit = UInt8(registers[Int(KPM33BMap.modbusAddress)])
        }
        return nil
    }

    private var pendingUnit: UInt8?

    /// Applies a written Modbus address once its reply has gone out.
    public func commitPendingAddress() {
        if let u = pendingUnit { unit = u; pendingUnit = nil }
    }

    // MARK: physics

    private func advance(to now: Double) {
        let elapsed = lastUpdate.map { max(0, now - $0) } ?? 0
        lastUpdate = now
        refresh(elapsed: elapsed)
    }

    private func random() -> Float {
        // xorshift32: deterministic, allocation-free.
        seed ^= seed << 13
        seed ^= seed >> 17
        seed ^= seed << 5
        return Float(seed) / Float(UInt32.max)
    }

    private func refresh(elapsed: Double) {
        let s = scenario
        let v = [s.voltage.0, s.voltage.1, s.voltage.2].map { s.wobble ? $0 + (random() - 0.5) * 2 : $0 }
        let loads = [s.load.0, s.load.1, s.load.2].map { relayClosed ? ($0 * (s.wobble ? 0.9 + 0.2 * random() : 1)) : 0 }
        let pf = [s.powerFactor.0, s.powerFactor.1, s.powerFactor.2]
        var p = [Float](), q = [Float](), sApp = [Float](), i = [Float]()
        for k in 0..<3 {
            let apparent = pf[k] == 0 ? abs(loads[k]) : abs(loads[k] / pf[k])
            let reactive = (apparent * apparent - loads[k] * loads[k]).squareRoot()
            p.append(loads[k]); q.append(reactive); sApp.append(apparent)
            i.append(v[k] > 0 ? apparent / v[k] : 0)
        }
        let lineV = v.map { $0 * Float(3).squareRoot() }
        let total = p.reduce(0, +), totalQ = q.reduce(0, +), totalS = sApp.reduce(0, +)
        let basic: [Float] = v + i + lineV + p + [total] + q + [totalQ] + sApp + [totalS]
            + pf.enumerated().map { loads[$0.offset] < 0 ? -$0.element : $0.element }
            + [totalS > 0 ? total / totalS : 1, s.frequency + (s.wobble ? (random() - 0.5) * 0.04 : 0)]
        for (k, value) in basic.enumerated() { writeFloat(KPM33BMap.basic.start + UInt16(2 * k), value) }
        let demand = sApp
        for (k, value) in demand.enumerated() { writeFloat(KPM33BMap.demand.start + UInt16(2 * k), value) }

        // Integrate energy: kWh += W × h / 1000. Energy registers only grow.
        let hours = elapsed / 3600
        for k in 0..<3 {
            let pk = Double(p[k]), qk = Double(q[k])
            if pk >= 0 { forwardActive[k] += pk * hours / 1000 } else { reverseActive[k] += -pk * hours / 1000 }
            if pk >= 0 { forwardReactive[k] += qk * hours / 1000 } else { reverseReactive[k] += qk * hours / 1000 }
        }
        let importKW = Double(p.filter { $0 > 0 }.reduce(0, +)) / 1000
        tariffActive[currentTariff()] += importKW * hours + Double(p.filter { $0 < 0 }.reduce(0, +)).magnitude * hours / 1000
        tariffReactive[currentTariff()] += Double(totalQ) * hours / 1000
        let fwd = forwardActive.reduce(0, +), rev = reverseActive.reduce(0, +)
        let fwdQ = forwardReactive.reduce(0, +), revQ = reverseReactive.reduce(0, +)
        let energy: [Double] = forwardActive + reverseActive + forwardReactive + reverseReactive
            + [fwd + rev, fwd, rev, fwdQ + revQ, fwdQ, revQ] + tariffActive + tariffReactive
        for (k, value) in energy.enumerated() { writeFloat(KPM33BMap.energy.start + UInt16(2 * k), Float(value)) }
        // "This month" of the combined runs follows the live registers.
        writeFloat(Register.historyRuns[0].start, Float(fwd + rev))
        writeFloat(Register.historyRuns[1].start, Float(fwdQ + revQ))
    }

    private func currentTariff() -> Int {
        // The manual's example day: 6–10 T1, 10–12 T2, 12–15 T1, 15–23 T3, 23–6 T4 (indices 0…3).
        let hour = Int(registers[Int(KPM33BMap.clock) + 1] & 0xFF)
        switch hour {
        case 6..<10, 12..<15: return 0
        case 10..<12: return 1
        case 15..<23: return 2
        default: return 3
        }
    }

    private func fillHistory() {
        // Previous months: frozen readings that decrease going back in time, so month k < month k-1.
        for run in Register.historyRuns {
            let base: Float = run.active ? (run.tariff == 0 ? 3800 : 900) : (run.tariff == 0 ? 700 : 160)
            for month in 0..<HistoryRun.months {
                writeFloat(run.register(month: month).address, base - Float(month) * base / 20)
            }
        }
    }

    public func writeFloat(_ address: UInt16, _ value: Float) {
        let (hi, lo) = value.registerWords
        registers[Int(address)] = hi
        registers[Int(address) + 1] = lo
    }
}
