import ModbusCore
import Platform
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// When each meter on one bus is polled next. Pure: time comes in as an argument (issue 17).
///
/// Every meter is due once per `cycleNanos`; the due meter that waited longest goes first, so when the bus cannot
/// carry every meter in one cycle each still gets its turn in order and its fast group stays as fresh as the bus
/// allows. A meter that has been silent for `offlineAfterNanos` backs off exponentially (2, 4, 8 … cycles, capped
/// at `maxBackoffNanos`) so its timeouts do not eat the others' bus time; one answer resets it. With a single meter
/// on the bus there is nobody to give way to and it keeps its cycle.
public struct BusSchedule: Sendable, Equatable {
    public struct Entry: Sendable, Equatable {
        public var nextDue: UInt64
        /// Monotonic time of the first failed cycle since the last success (nil while answering).
        public var failingSince: UInt64?
        /// Failed cycles since the meter counted as offline.
        public var backoffSteps: Int = 0
    }

    public enum Step: Sendable, Equatable {
        case poll(Int)
        case sleep(until: UInt64)
    }

    public private(set) var entries: [Entry]
    public let cycleNanos: UInt64
    public let offlineAfterNanos: UInt64
    public let maxBackoffNanos: UInt64

    public init(meters: Int, now: UInt64, cycleNanos: UInt64, offlineAfterNanos: UInt64,
                maxBackoffNanos: UInt64 = 30_000_000_000) {
        entries = Array(repeating: Entry(nextDue: now, failingSince: nil), count: meters)
        self.cycleNanos = max(cycleNanos, 1)
        self.offlineAfterNanos = offlineAfterNanos
        self.maxBackoffNanos = max(maxBackoffNanos, cycleNanos)
    }

    /// The meter to poll now, or how long to sleep.
    public func next(now: UInt64) -> Step {
        var best: Int? = nil
        var earliest = UInt64.max
        for (i, e) in entries.enumerated() where e.nextDue < earliest {
            earliest = e.nextDue
            best = i
        }
        guard let best else { return .sleep(until: now &+ cycleNanos) }
        return earliest <= now ? .poll(best) : .sleep(until: earliest)
    }

    /// Records a finished cycle of meter `index` that started at `started` and ended at `now`.
    public mutating func completed(_ index: Int, started: UInt64, ok: Bool, now: UInt64) {
        var e = entries[index]
        if ok {
            e.failingSince = nil
            e.backoffSteps = 0
            e.nextDue = started &+ cycleNanos
        } else {
            let since = e.failingSince ?? started
            e.failingSince = since
            if entries.count > 1 && now &- since >= offlineAfterNanos {
                e.backoffSteps += 1
                let factor = UInt64(1) << UInt64(min(e.backoffSteps, 20))
                let (product, overflow) = cycleNanos.multipliedReportingOverflow(by: factor)
                e.nextDue = now &+ (overflow ? maxBackoffNanos : min(product, maxBackoffNanos))
            } else {
                e.nextDue = started &+ cycleNanos
            }
        }
        entries[index] = e
    }
}

/// What a request forwarded to the bus got back.
public enum ForwardOutcome: Sendable, Equatable {
    /// The reply PDU (function code and data, no address, no CRC).
    case reply([UInt8])
    /// The meter answered with this exception code.
    case exception(UInt8)
    /// No usable answer before the deadline (timeout, CRC errors, queue wait too long): gateway target failed.
    case failed
}

/// One RS485 bus: one thread, one master, several meters (`MeterPoller`s, each still its own `MeterLink`), and
/// requests forwarded from other masters (Modbus TCP) served between poll transactions.
public final class MeterBus: @unchecked Sendable {
    public let meters: [MeterPoller]
    private let client: ModbusClient
    private let clock: PollClock
    private let startThread: PollThreadStarter
    private let plan: PollPlan

    private struct Job {
        var request: ModbusRequest
        var deadline: UInt64
        var completion: @Sendable (ForwardOutcome) -> Void
    }
    private let jobs = Mutex<[Job]>([])
    /// Most forwarded requests waiting at once; more are refused at once (the TCP side answers 0x0B).
    public let maxQueuedJobs: Int

    private let running = Atomic<Bool>(false)
    private let stopRequested = Atomic<Bool>(false)
    private let lastLoop = Atomic<UInt64>(0)
    private var thread: OSThread?
    private let wakePipe: (Int32, Int32)
    /// Poll-thread only.
    private var schedule: BusSchedule
    private var servingJob = false
    /// Sets the master's attempts per request (`RTUMaster.retry`): a meter that is already failing gets one
    /// attempt per request, so its silence costs the others one timeout, not `retries` of them. Nil: not adjustable.
    public var setAttempts: ((Int) -> Void)?
    /// The attempts the master was configured with.
    public var configuredAttempts = 3
    /// Issue 18 (perf): called once on the poll thread when it starts, with the real-time scheduling it got
    /// (SCHED_FIFO and locked memory when the unit permits). Set before `start()`; the caller logs `message`.
    public var onRealtimeOutcome: (@Sendable (RealtimeScheduling.Outcome) -> Void)?
    private var currentAttempts = 3

    public init(client: ModbusClient, meters: [MeterPoller], clock: PollClock = .system,
                maxQueuedJobs: Int = 64,
                startThread: @escaping PollThreadStarter = { (name, body) throws(SystemError) in
                    try OSThread(name: name, body)
                }) {
        precondition(!meters.isEmpty, "a bus needs at least one meter")
        self.meters = meters
        self.client = client
        self.clock = clock
        self.startThread = startThread
        self.maxQueuedJobs = maxQueuedJobs
        self.plan = meters[0].plan
        self.wakePipe = (try? Descriptor.pipe(nonBlocking: true)) ?? (-1, -1)
        self.schedule = BusSchedule(meters: meters.count, now: clock.monotonicNanos(),
                                    cycleNanos: UInt64(plan.cycleSeconds * 1e9),
                                    offlineAfterNanos: UInt64(plan.offlineAfterSeconds * 1e9),
                                    maxBackoffNanos: UInt64(min(30, max(plan.cycleSeconds * 8, plan.cycleSeconds)) * 1e9))
        for meter in meters {
            meter.bus = self
            meter.beforeTransaction = { [weak self] in _ = self?.serveOneJob() }
        }
    }

    deinit {
        stop()
        if wakePipe.0 >= 0 { Descriptor.close(wakePipe.0); Descriptor.close(wakePipe.1) }
    }

    /// The meter polled at `address`, if any.
    public func meter(address: UInt8) -> MeterPoller? { meters.first { $0.unit == address } }

    public var isRunning: Bool { running.load(ordering: .acquiring) }

    /// Monotonic nanoseconds of the loop's latest turn (0 before the first cycle): the watchdog's proof that the
    /// poll thread is alive, whether or not any meter answers.
    public var lastCycleEndNanos: UInt64 { lastLoop.load(ordering: .acquiring) }

    /// Starts the poll thread (named `meterext-poll`).
    public func start() throws(SystemError) {
        guard !running.exchange(true, ordering: .acquiringAndReleasing) else { return }
        stopRequested.store(false, ordering: .relaxed)
        do {
            thread = try startThread("meterext-poll") { [self] in loop() }
        } catch {
            running.store(false, ordering: .relaxed)
            throw error
        }
    }

    /// Stops the loop after the current transaction and waits for the thread; queued work is failed.
    public func stop() {
        guard running.load(ordering: .acquiring), let thread else { return }
        stopRequested.store(true, ordering: .releasing)
        wake()
        thread.join()
        self.thread = nil
        running.store(false, ordering: .releasing)
        for meter in meters { meter.failPendingCommand() }
        for job in jobs.withLock({ j -> [Job] in let all = j; j = []; return all }) { job.completion(.failed) }
    }

    func wake() {
        var one: UInt8 = 1
        _ = withUnsafeBytes(of: &one) { try? Descriptor.write(wakePipe.1, $0) }
    }

    // MARK: forwarded requests

    /// Queues `request` for the bus (served between poll transactions, in order) and calls `completion` once, on
    /// the poll thread, or at once with `.failed` when the bus is not running or the queue is full. A request still
    /// waiting at `deadline` (monotonic nanoseconds) is answered `.failed` without being sent.
    public func forward(_ request: ModbusRequest, deadline: UInt64,
                        completion: @escaping @Sendable (ForwardOutcome) -> Void) {
        guard isRunning, request.validationError == nil else { return completion(.failed) }
        let accepted = jobs.withLock { j -> Bool in
            guard j.count < maxQueuedJobs else { return false }
            j.append(Job(request: request, deadline: deadline, completion: completion))
            return true
        }
        if accepted { wake() } else { completion(.failed) }
    }

    /// Runs the oldest forwarded request, if any. Poll thread only. Returns whether there was one.
    @discardableResult
    func serveOneJob() -> Bool {
        guard !servingJob else { return false }
        guard let job = jobs.withLock({ j -> Job? in j.isEmpty ? nil : j.removeFirst() }) else { return false }
        servingJob = true
        defer { servingJob = false }
        if clock.monotonicNanos() >= job.deadline { job.completion(.failed); return true }
        // A forwarded request gets the configured attempts even inside a failing meter's cycle.
        if let setAttempts, currentAttempts != configuredAttempts { setAttempts(configuredAttempts) }
        defer { if let setAttempts, currentAttempts != configuredAttempts { setAttempts(currentAttempts) } }
        let outcome: ForwardOutcome
        switch client.execute(job.request) {
        case .success(let frame):
            // Address … CRC: the PDU is everything between.
            outcome = frame.count > 3 ? .reply(Array(frame[1..<(frame.count - 2)])) : .failed
        case .failure(.transaction(.exception(let code))):
            outcome = .exception(code)
        case .failure:
            outcome = .failed
        }
        job.completion(outcome)
        return true
    }

    // MARK: the loop

    private func loop() {
        // The DE release sleeps to the computed end of a frame: default timer slack (50 µs) would blur it.
        try? MonotonicClock.setTimerSlackForCurrentThread(nanos: 1_000)
        // Issue 18: a late wake-up under load held DE past t3.5; SCHED_FIFO (and locked memory) when permitted.
        onRealtimeOutcome?(RealtimeScheduling.applyToCurrentThread())
        while !stopRequested.load(ordering: .acquiring) {
            let now = clock.monotonicNanos()
            switch schedule.next(now: now) {
            case .poll(let index):
                if let setAttempts {
                    currentAttempts = schedule.entries[index].failingSince == nil ? configuredAttempts : 1
                    setAttempts(currentAttempts)
                }
                let ok = meters[index].runCycle()
                let end = clock.monotonicNanos()
                schedule.completed(index, started: now, ok: ok, now: end)
                lastLoop.store(end, ordering: .releasing)
            case .sleep(let until):
                lastLoop.store(now, ordering: .releasing)
                // Idle: commands and forwarded requests first, then sleep until due or woken.
                var worked = false
                for meter in meters where meter.handlePendingCommand() { worked = true }
                if serveOneJob() { worked = true }
                if !worked { waitForWake(nanos: until &- now) }
            }
        }
    }

    private func waitForWake(nanos: UInt64) {
        // At most a second per wait, so a stop request that found no pipe is still seen.
        let deadline = MonotonicClock.nowNanos() &+ min(nanos, 1_000_000_000)
        if (try? Descriptor.poll(wakePipe.0, events: Int16(POLLIN), deadline: deadline)) ?? 0 > 0 {
            var drain: (UInt64, UInt64) = (0, 0)
            _ = withUnsafeMutableBytes(of: &drain) { try? Descriptor.read(wakePipe.0, into: $0) }
        }
    }
}
