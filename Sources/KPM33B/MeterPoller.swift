import ModbusCore
import Platform
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// When each register group is read. Defaults follow how fast the values change and what the bus can carry:
/// one 52-register read takes ~142 ms at 9600 8E1, so a 1 s cycle leaves the bus mostly idle.
public struct PollPlan: Sendable, Equatable {
    /// Basic block and relay, every cycle.
    public var cycleSeconds: Double = 1.0
    /// Energy and demand registers.
    public var energySeconds: Double = 5.0
    /// Parameters (serial number, clock, control mode, load threshold) and the monthly history.
    public var slowSeconds: Double = 3600.0
    /// After this many cycles without an answer the link is `offline` and data must not be served as current.
    public var offlineAfterCycles: Int = 5

    public init() {}

    /// How long the meter may stay silent before it counts as offline (at least 5 s).
    public var offlineAfterSeconds: Double { max(5.0, Double(offlineAfterCycles) * cycleSeconds) }
}

/// Wall and monotonic time for the poll loop; injected so tests can drive it. `monotonicNanos` must read
/// `MonotonicClock` (or a test's stand-in for it): the watchdog compares `lastCycleEndNanos` with that clock.
public struct PollClock: Sendable {
    public var monotonicNanos: @Sendable () -> UInt64
    public var unixSeconds: @Sendable () -> Int64

    public init(monotonicNanos: @escaping @Sendable () -> UInt64, unixSeconds: @escaping @Sendable () -> Int64) {
        self.monotonicNanos = monotonicNanos
        self.unixSeconds = unixSeconds
    }

    /// Platform's monotonic clock and the wall clock.
    public static let system = PollClock(monotonicNanos: { MonotonicClock.nowNanos() }, unixSeconds: { wallClockSeconds() })
}

/// Starts the poll loop's thread: Platform's named `OSThread` unless a host injects another way.
public typealias PollThreadStarter = @Sendable (_ name: String, _ body: @escaping () -> Void) throws(SystemError)
    -> OSThread

public enum MeterCommandError: Error, Equatable, CustomStringConvertible {
    case busy
    case notRunning
    case failed(String)

    public var description: String {
        switch self {
        case .busy: return "another relay command is in progress"
        case .notRunning: return "the poll loop is not running"
        case .failed(let why): return why
        }
    }
}

/// Polls a KPM33B and publishes snapshots.
///
/// The loop runs on its own thread. After start-up every buffer it touches is preallocated: a steady-state cycle
/// (requests, decoding, publishing) allocates nothing on the heap. Readers take snapshots through a sequence
/// lock and never block it.
public final class MeterPoller: MeterLink, @unchecked Sendable {
    public let unit: UInt8
    public let plan: PollPlan
    public let lineDescription: String

    private let client: ModbusClient
    private let clock: PollClock
    private let startThread: PollThreadStarter
    private let exchange = SnapshotExchange()
    private let work = SnapshotState()

    // Schedule state, poll thread only.
    private var nextEnergy: UInt64 = 0
    private var nextSlow: UInt64 = 0
    private var lastSuccess: UInt64?
    private let startedAt: UInt64
    private var demandSupported = true

    // Commands from other threads.
    private let pending = Mutex<PendingCommand?>(nil)
    private let lastCycleEnd = Atomic<UInt64>(0)
    /// The bus whose thread runs this meter's cycles (set once, before that bus starts).
    weak var bus: MeterBus?
    /// The bus this poller started for itself (`start()` without a shared bus).
    private var ownBus: MeterBus?
    /// Called on the poll thread before every poll transaction: the bus serves one forwarded request there, so a
    /// forwarded request waits at most one transaction.
    var beforeTransaction: (() -> Void)?

    /// Called on the poll thread when a register's value turns implausible (outside `Plausibility`'s range or not
    /// finite) after a plausible read or none: once per episode, so a stuck register is reported once and the
    /// caller's logger rate-limits a flapping one. Set before `start()`.
    public var onImplausibleValue: (@Sendable (FloatRegister, Float) -> Void)?
    /// Per float slot (then prepaid energy, overdraft): whether the last value read was implausible. Poll thread only.
    private let implausibleNow = UnsafeMutableBufferPointer<Bool>.allocate(capacity: SnapshotExchange.floatCount + 2)

    // Reader-side cache: one MeterSnapshot per generation, rebuilt in place (issue 18).
    private struct ReaderCache {
        var snapshot: MeterSnapshot?
        let state = SnapshotState()
        /// The parameter words and error record `snapshot` was decoded from: unchanged ones are not decoded again.
        var parameterWords: [UInt16] = []
        var error = SnapshotState.ErrorRecord()
    }
    private let cache = Mutex(ReaderCache())

    public init(client: ModbusClient, unit: UInt8, plan: PollPlan = PollPlan(), lineDescription: String,
                clock: PollClock = .system,
                startThread: @escaping PollThreadStarter = { (name, body) throws(SystemError) in
                    try OSThread(name: name, body)
                }) {
        self.client = client
        self.unit = unit
        self.plan = plan
        self.lineDescription = lineDescription
        self.clock = clock
        self.startThread = startThread
        self.startedAt = clock.monotonicNanos()
        implausibleNow.initialize(repeating: false)
    }

    deinit {
        implausibleNow.deallocate()
    }

    // MARK: running

    /// Starts a poll thread (named `meterext-poll`) for this meter alone. The first cycle reads every group.
    /// Throws when the thread cannot be created; the loop never runs on the caller's thread instead. Several
    /// meters on one bus share one `MeterBus` instead (which starts the thread).
    public func start() throws(SystemError) {
        guard bus == nil || ownBus != nil else { return }
        if ownBus == nil { ownBus = MeterBus(client: client, meters: [self], clock: clock, startThread: startThread) }
        try ownBus?.start()
    }

    /// Stops the loop after the current transaction and waits for the thread.
    public func stop() {
        guard let own = ownBus else { return }
        own.stop()
        ownBus = nil
    }

    public var isRunning: Bool { bus?.isRunning ?? false }

    public var meterAddress: UInt8? { unit }

    func wake() { bus?.wake() }

    /// Fails a command still queued when the bus stopped.
    func failPendingCommand() {
        if let cmd = pending.withLock({ p -> PendingCommand? in let c = p; p = nil; return c }) {
            cmd.fail(MeterCommandError.notRunning)
        }
    }

    /// This meter's share of the master's counters (issue 17: several meters share one master). Poll thread only.
    private var ownStatistics = ModbusStatistics()

    @inline(__always)
    private func execute(_ request: ModbusRequest) -> ModbusResult {
        beforeTransaction?()
        return counted(request)
    }

    /// Runs `request` on the master and adds what it changed in the master's counters to this meter's.
    @inline(__always)
    private func counted(_ request: ModbusRequest) -> ModbusResult {
        let before = client.statistics
        let result = client.execute(request)
        let after = client.statistics
        ownStatistics.transactions &+= after.transactions &- before.transactions
        ownStatistics.succeeded &+= after.succeeded &- before.succeeded
        ownStatistics.timeouts &+= after.timeouts &- before.timeouts
        ownStatistics.crcErrors &+= after.crcErrors &- before.crcErrors
        ownStatistics.exceptions &+= after.exceptions &- before.exceptions
        ownStatistics.wrongSlave &+= after.wrongSlave &- before.wrongSlave
        ownStatistics.wrongFunction &+= after.wrongFunction &- before.wrongFunction
        ownStatistics.malformed &+= after.malformed &- before.malformed
        ownStatistics.ioErrors &+= after.ioErrors &- before.ioErrors
        ownStatistics.retries &+= after.retries &- before.retries
        ownStatistics.interruptedFrames &+= after.interruptedFrames &- before.interruptedFrames
        return result
    }

    // MARK: one cycle

    /// Runs one poll cycle on the caller's thread and publishes the result (true when the meter answered every
    /// read). The CLI's `read` uses this directly.
    @discardableResult
    public func runCycle() -> Bool {
        let start = clock.monotonicNanos()
        let now = clock.unixSeconds()
        _ = handlePendingCommand()

        var ok = readFloats(KPM33BMap.basic, offset: SnapshotExchange.basicOffset, group: .basic, now: now)
        if ok { ok = readRelay(now: now) }
        if ok && start >= nextEnergy {
            ok = readFloats(KPM33BMap.energy, offset: SnapshotExchange.energyOffset, group: .energy, now: now)
            if ok && demandSupported {
                _ = readFloats(KPM33BMap.demand, offset: SnapshotExchange.demandOffset, group: .demand, now: now)
            }
            if ok { nextEnergy = start &+ UInt64(plan.energySeconds * 1e9) }
        }
        if ok && start >= nextSlow {
            let slowOK = readParameters(now: now) && readHistory(now: now)
            // A failed slow read is retried within a minute rather than an hour.
            nextSlow = start &+ UInt64((slowOK ? plan.slowSeconds : min(60, plan.slowSeconds)) * 1e9)
        }
        if ok { lastSuccess = start }

        let end = clock.monotonicNanos()
        work.header.health = health(at: end, cycleOK: ok)
        work.header.publishedAt = now
        work.header.statistics = ownStatistics
        work.header.cycleMicros = UInt32(min((end &- start) / 1000, UInt64(UInt32.max)))
        exchange.publish(work)
        lastCycleEnd.store(end, ordering: .releasing)
        return ok
    }

    /// Monotonic nanoseconds at the end of the last cycle (0 before the first): the watchdog's proof that the
    /// loop is alive, whether or not the meter answers.
    public var lastCycleEndNanos: UInt64 { lastCycleEnd.load(ordering: .acquiring) }

    private func health(at now: UInt64, cycleOK: Bool) -> LinkHealth {
        if cycleOK { return .online }
        let limit = UInt64(plan.offlineAfterSeconds * 1e9)
        guard let last = lastSuccess else {
            return now &- startedAt > limit ? .offline : .starting
        }
        return now &- last > limit ? .offline : .stale
    }

    private func record(_ failure: ModbusFailure, register: UInt16, now: Int64) {
        work.header.error = SnapshotState.ErrorRecord(failure: failure, at: now, register: register)
    }

    private func readFloats(_ block: RegisterBlock, offset: Int, group: RegisterGroup, now: Int64) -> Bool {
        var address = block.start
        var index = offset
        let end = block.start + block.count
        while address < end {
            // An even count, so no float is split across two requests.
            let count = min(KPM33BMap.maxRegistersPerRead & ~1, end - address)
            switch execute(.readHoldingRegisters(unit: unit, start: address, count: count)) {
            case .success(let frame):
                for k in 0..<Int(count / 2) {
                    let value = frame.float32(at: 3 + 4 * k)
                    work.floats[index + k] = value
                    judge(value, at: address + UInt16(2 * k), slot: index + k)
                }
            case .failure(let failure):
                record(failure, register: address, now: now)
                if group == .demand, case .transaction(.exception(2)) = failure {
                    // Firmware without the demand registers: stop asking.
                    demandSupported = false
                }
                return false
            }
            index += Int(count / 2)
            address += count
        }
        work.readAt[group.rawValue] = now
        return true
    }

    private func readRelay(now: Int64) -> Bool {
        switch execute(.readCoils(unit: unit, start: KPM33BMap.relayCoil, count: KPM33BMap.relayCoilCount)) {
        case .success(let frame):
            work.header.relayBits = frame[3]
            if RelayState(bits: frame[3]).closed { work.header.relayOpenedByBoard = false }
            work.readAt[RegisterGroup.relay.rawValue] = now
            return true
        case .failure(let failure):
            record(failure, register: KPM33BMap.relayCoil, now: now)
            return false
        }
    }

    /// The parameter area has holes the meter may refuse to read; these runs cover the documented words only.
    static let parameterRuns: [(UInt16, UInt16)] = [(0x0000, 3), (0x000E, 2), (0x0012, 16), (0x0023, 4)]

    private func readParameters(now: Int64) -> Bool {
        for (start, count) in Self.parameterRuns {
            switch execute(.readHoldingRegisters(unit: unit, start: start, count: count)) {
            case .success(let frame):
                for k in 0..<Int(count) { work.parameters[Int(start) + k] = frame.word(at: 3 + 2 * k) }
                if start <= KPM33BMap.prepaidEnergy && KPM33BMap.prepaidEnergy + 2 <= start + count {
                    judge(parameterFloat(KPM33BMap.prepaidEnergy), at: KPM33BMap.prepaidEnergy,
                          slot: SnapshotExchange.floatCount)
                }
                if start <= KPM33BMap.overdraft && KPM33BMap.overdraft + 2 <= start + count {
                    judge(parameterFloat(KPM33BMap.overdraft), at: KPM33BMap.overdraft,
                          slot: SnapshotExchange.floatCount + 1)
                }
            case .failure(let failure):
                record(failure, register: start, now: now)
                return false
            }
        }
        work.readAt[RegisterGroup.parameters.rawValue] = now
        return true
    }

    private func parameterFloat(_ address: UInt16) -> Float {
        Float(bitPattern: UInt32(work.parameters[Int(address)]) << 16 | UInt32(work.parameters[Int(address) + 1]))
    }

    /// Counts an implausible value and reports the start of an episode. No allocation unless one starts.
    @inline(__always)
    private func judge(_ value: Float, at address: UInt16, slot: Int) {
        if Plausibility.isPlausible(value, at: address) {
            implausibleNow[slot] = false
            return
        }
        work.header.implausible &+= 1
        guard !implausibleNow[slot] else { return }
        implausibleNow[slot] = true
        if let report = onImplausibleValue, let register = Register.at(address) { report(register, value) }
    }

    private func readHistory(now: Int64) -> Bool {
        readFloats(KPM33BMap.history, offset: SnapshotExchange.historyOffset, group: .history, now: now)
    }

    // MARK: commands (relay, parameter writes)

    // The snapshot exchange has one writer. While the loop runs that is the poll thread, so every command that
    // touches the bus (and may publish) is queued to it; `setRelay` and `writeParameters` do that. The synchronous
    // `performRelay`, `performParameterWrite` and `runCycle` are for a caller that *is* the only writer: the loop
    // itself, or the CLI's one-shot commands before any loop was started.

    final class PendingCommand {
        enum Kind {
            case relay(closed: Bool, CheckedContinuation<RelayState, Error>)
            case parameters(start: UInt16, values: [UInt16], CheckedContinuation<Void, Error>)
        }
        let kind: Kind
        init(_ kind: Kind) { self.kind = kind }

        func fail(_ error: Error) {
            switch kind {
            case .relay(_, let continuation): continuation.resume(throwing: error)
            case .parameters(_, _, let continuation): continuation.resume(throwing: error)
            }
        }
    }

    /// Queues `make(continuation)` for the poll thread; `busy` while another command waits.
    private func enqueue<T>(_ make: (CheckedContinuation<T, Error>) -> PendingCommand.Kind) async throws -> T {
        guard isRunning else { throw MeterCommandError.notRunning }
        return try await withCheckedThrowingContinuation { continuation in
            let accepted = pending.withLock { slot -> Bool in
                guard slot == nil else { return false }
                slot = PendingCommand(make(continuation))
                return true
            }
            if accepted { wake() } else { continuation.resume(throwing: MeterCommandError.busy) }
        }
    }

    /// Closes or opens the relay through the running poll loop.
    public func setRelay(closed: Bool) async throws -> RelayState {
        try await enqueue { .relay(closed: closed, $0) }
    }

    /// Writes parameter words with FC16 (control mode, load threshold, clock) through the running poll loop.
    public func writeParameters(start: UInt16, values: [UInt16]) async throws {
        try await enqueue { .parameters(start: start, values: values, $0) }
    }

    /// Takes a queued command, if any, and runs it. Poll thread only.
    func handlePendingCommand() -> Bool {
        guard let command = pending.withLock({ slot -> PendingCommand? in
            let c = slot
            slot = nil
            return c
        }) else { return false }
        switch command.kind {
        case .relay(let closed, let continuation):
            switch performRelay(closed: closed) {
            case .success(let state): continuation.resume(returning: state)
            case .failure(let failure): continuation.resume(throwing: MeterCommandError.failed(
                "relay command failed: \(LinkDiagnosis.message(for: failure, unit: unit, line: lineDescription))"))
            }
        case .parameters(let start, let values, let continuation):
            switch performParameterWrite(start: start, values: values) {
            case .success: continuation.resume()
            case .failure(let failure): continuation.resume(throwing: MeterCommandError.failed(
                "parameter write failed: \(LinkDiagnosis.message(for: failure, unit: unit, line: lineDescription))"))
            }
        }
        return true
    }

    /// Writes the relay coil (FC05) and reads it back (FC01), on the caller's thread, which must be the exchange's
    /// only writer (see above): the poll thread, or any thread while the loop is not running.
    public func performRelay(closed: Bool) -> Result<RelayState, ModbusFailure> {
        let now = clock.unixSeconds()
        if case .failure(let f) = counted(.writeSingleCoil(unit: unit, address: KPM33BMap.relayCoil, on: closed)) {
            record(f, register: KPM33BMap.relayCoil, now: now)
            return .failure(f)
        }
        guard readRelay(now: now) else { return .failure(work.header.error.failure ?? .invalidRequest) }
        if !closed && !RelayState(bits: work.header.relayBits).closed { work.header.relayOpenedByBoard = true }
        work.header.statistics = ownStatistics
        exchange.publish(work)
        return .success(RelayState(bits: work.header.relayBits))
    }

    /// Writes parameter words with FC16 on the caller's thread (same rule as `performRelay`); the next cycle
    /// re-reads the parameter area.
    public func performParameterWrite(start: UInt16, values: [UInt16]) -> Result<Void, ModbusFailure> {
        switch counted(.writeMultipleRegisters(unit: unit, start: start, values: values)) {
        case .success: nextSlow = 0; return .success(())
        case .failure(let f): return .failure(f)
        }
    }

    // MARK: snapshots

    /// The latest published snapshot. Issue 18: built once per generation into the previous generation's storage
    /// (arrays, serial number) when no reader holds that one any more, so a reader that takes a snapshot every poll
    /// cycle and lets it go costs no allocation; a snapshot still held elsewhere stays as it was (copy on write).
    public func snapshot() -> MeterSnapshot {
        let generation = exchange.generation
        return cache.withLock { c in
            if let cached = c.snapshot, cached.generation == generation { return cached }
            let copied = exchange.read(into: c.state)
            var taken: MeterSnapshot? = nil
            swap(&taken, &c.snapshot)  // the cache's reference goes: the storage is unique unless a reader holds it
            if taken == nil { taken = MeterSnapshot() }
            Self.update(&taken!, from: c.state, generation: copied, unit: unit, line: lineDescription,
                        parameterWords: &c.parameterWords, error: &c.error)
            c.snapshot = taken
            return taken!
        }
    }

    static func makeSnapshot(_ state: SnapshotState, generation: UInt64, unit: UInt8, line: String) -> MeterSnapshot {
        var s = MeterSnapshot()
        var words: [UInt16] = []
        var error = SnapshotState.ErrorRecord()
        update(&s, from: state, generation: generation, unit: unit, line: line, parameterWords: &words, error: &error)
        return s
    }

    /// Makes `s` the snapshot of `state`, writing into its existing storage. `parameterWords` and `error` are what
    /// `s.parameters` and `s.lastError` were decoded from (kept when the words and the record are unchanged).
    static func update(_ s: inout MeterSnapshot, from state: SnapshotState, generation: UInt64, unit: UInt8,
                       line: String, parameterWords: inout [UInt16], error: inout SnapshotState.ErrorRecord) {
        s.generation = generation
        s.health = state.header.health
        s.publishedAt = state.header.publishedAt
        s.counters = state.header.statistics
        s.implausibleValues = state.header.implausible
        s.cycleMicroseconds = state.header.cycleMicros
        for group in RegisterGroup.allCases {
            let t = state.readAt[group.rawValue]
            s.readAt[group.rawValue] = t == 0 ? nil : t
        }
        func slice(_ block: RegisterBlock, _ values: inout [Float]?) {
            guard state.readAt[block.group.rawValue] != 0 else { values = nil; return }
            let range = SnapshotExchange.floats(of: block)
            if values?.count == range.count {
                for i in 0..<range.count { values![i] = state.floats[range.lowerBound + i] }
            } else {
                values = Array(state.floats[range])
            }
        }
        slice(KPM33BMap.basic, &s.basic)
        slice(KPM33BMap.energy, &s.energy)
        slice(KPM33BMap.demand, &s.demand)
        slice(KPM33BMap.history, &s.history)
        s.relay = s.readAt[RegisterGroup.relay.rawValue] != nil ? RelayState(bits: state.header.relayBits) : nil
        s.relayOpenedByBoard = state.header.relayOpenedByBoard
        if s.readAt[RegisterGroup.parameters.rawValue] != nil {
            let words = UnsafeBufferPointer(state.parameters)
            if s.parameters == nil || !parameterWords.elementsEqual(words) {
                s.parameters = decodeParameters(words)
                parameterWords = Array(words)
            }
        } else {
            s.parameters = nil
        }
        if let failure = state.header.error.failure {
            if s.lastError == nil || error != state.header.error {
                s.lastError = LinkError(kind: LinkDiagnosis.kind(of: failure),
                                        message: LinkDiagnosis.message(for: failure, unit: unit, line: line),
                                        at: state.header.error.at)
                error = state.header.error
            }
        } else {
            s.lastError = nil
        }
    }

    /// The serial number as on the meter's label: the first 13 bytes of 0x0012…, as stored when they are all printable
    /// ASCII, otherwise all 13 bytes as upper-case hex (never empty, never silently shortened).
    static func serialNumberText(_ bytes: [UInt8]) -> String {
        let serial = bytes.prefix(13)
        if serial.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) { return String(decoding: serial, as: UTF8.self) }
        let digits = Array("0123456789ABCDEF".utf8)
        return String(decoding: serial.flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 0xF)]] }, as: UTF8.self)
    }

    static func decodeParameters(_ words: UnsafeBufferPointer<UInt16>) -> MeterParameters {
        func float(_ address: UInt16) -> Float {
            Float(bitPattern: UInt32(words[Int(address)]) << 16 | UInt32(words[Int(address) + 1]))
        }
        var sn: [UInt8] = []
        for i in 0..<Int(KPM33BMap.serialNumberRegisters) {
            let w = words[Int(KPM33BMap.serialNumber) + i]
            sn.append(UInt8(w >> 8))
            sn.append(UInt8(w & 0xFF))
        }
        let serial = serialNumberText(sn)
        let c = Int(KPM33BMap.clock)
        let clock = MeterClock(year: Int(words[c] >> 8), month: Int(words[c] & 0xFF),
                               day: Int(words[c + 1] >> 8), hour: Int(words[c + 1] & 0xFF),
                               minute: Int(words[c + 2] >> 8), second: Int(words[c + 2] & 0xFF))
        return MeterParameters(
            serialNumber: serial,
            modbusAddress: words[Int(KPM33BMap.modbusAddress)],
            lineSettingsWord: words[Int(KPM33BMap.lineSettings)],
            controlModeWord: words[Int(KPM33BMap.controlMode)],
            loadThresholdKW: words[Int(KPM33BMap.loadThreshold)],
            clock: clock,
            prepaidEnergyKWh: float(KPM33BMap.prepaidEnergy),
            overdraftKWh: float(KPM33BMap.overdraft),
            forcedPowerWords: (words[Int(KPM33BMap.forcedPower)], words[Int(KPM33BMap.forcedPower) + 1]),
            wirelessStatusWord: words[Int(KPM33BMap.wirelessStatus)])
    }
}

/// Turns link failures into words an installer can act on.
public enum LinkDiagnosis {
    public static func kind(of failure: ModbusFailure) -> LinkError.Kind {
        switch failure {
        case .transaction(.noReply), .transaction(.incompleteReply): return .timeout
        case .transaction(.crcMismatch): return .crc
        case .transaction(.exception): return .exception
        case .transaction(.wrongSlave): return .wrongSlave
        case .transaction(.wrongFunction): return .wrongFunction
        case .transaction(.malformed), .invalidRequest: return .malformed
        case .io: return .io
        }
    }

    public static func message(for failure: ModbusFailure, unit: UInt8, line: String) -> String {
        switch failure {
        case .transaction(.noReply):
            return "no reply from unit \(unit) at \(line): check the RS485 wiring (A/B, power), the meter's address "
                + "and baud rate (meterext scan finds them)"
        case .transaction(.incompleteReply(let n)):
            return "the reply from unit \(unit) broke off after \(n) bytes: check termination and cable length"
        case .transaction(.crcMismatch):
            return "replies arrive with CRC errors at \(line): the parity setting differs from the meter's, "
                + "A and B are swapped, or the line is noisy"
        case .transaction(.exception(let code)):
            return "the device at unit \(unit) refused the request (Modbus exception \(code): "
                + "\(ExceptionCode.describe(code))): is it a KPM33B?"
        case .transaction(.wrongSlave(let other)):
            return "unit \(other) answered instead of unit \(unit): two devices share the bus or the address is wrong"
        case .transaction(.wrongFunction(let fc)):
            return "the device answered with function 0x\(String(fc, radix: 16)): is it a KPM33B?"
        case .transaction(.malformed):
            return "bytes arrive but never form a valid reply at \(line): check baud rate, parity and A/B wiring"
        case .io(let errno, let op):
            return "the serial port failed (\(op), errno \(errno)): is the adapter still connected?"
        case .invalidRequest:
            return "invalid request"
        }
    }
}
