import Platform
import ArgumentParser
import FoundationEssentials
import Glibc
import KPM33B
import MeterHardware
import ModbusCore

/// Measurements for `make bench` (not tests: it prints figures, it asserts nothing).
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench", abstract: "Benchmark helpers for `make bench` (prints JSON figures).",
        shouldDisplay: false, subcommands: [Modbus.self, Poll.self, HistoryTool.self])

    /// Direction control standing in for a GPIO DE line on a pty: does nothing, but makes the port wait for the
    /// computed end of the frame exactly as it would with a real line, so the turnaround timing is measured.
    final class TimedNullDirection: DirectionControl {
        var description: String { "timed null (benchmark)" }
        func beginTransmit() throws(SystemError) {}
        func endTransmit() throws(SystemError) {}
        var needsEndOfFrameWait: Bool { true }
    }

    static func cpuSeconds() -> Double {
        let u = usage()
        return u.user + u.system
    }

    /// The whole process (every thread): user and system CPU seconds, voluntary and involuntary context switches.
    static func usage() -> (user: Double, system: Double, voluntary: Double, involuntary: Double) {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return (Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6,
                Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6,
                Double(usage.ru_nvcsw), Double(usage.ru_nivcsw))
    }

    /// CPU time of the calling thread (CLOCK_THREAD_CPUTIME_ID: exact, unlike getrusage's tick sampling).
    static func threadCPUNanos() -> UInt64 {
        var ts = timespec()
        _ = clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }

    typealias Counter = @convention(c) () -> UInt64

    /// The preloaded per-thread allocation counter, or nil without it. Resolved once: dlsym itself may allocate.
    static func allocationCounter() -> Counter? {
        // RTLD_DEFAULT is NULL on glibc: search the global scope, where the preloaded counter sits.
        guard let symbol = dlsym(nil, "meterext_thread_allocations") else { return nil }
        return unsafeBitCast(symbol, to: Counter.self)
    }

    static func printJSON(_ fields: [String: Double]) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        print(String(decoding: try! encoder.encode(fields), as: UTF8.self))
    }

    /// One transaction, never inlined: `make bench` counts its instructions with callgrind
    /// (`--toggle-collect=*benchTransaction*`), as it counts `modbus_read_registers` in the libmodbus peer.
    @inline(never)
    static func benchTransaction(_ master: RTUMaster, _ request: ModbusRequest) -> Bool {
        if case .success = master.execute(request) { return true }
        return false
    }

    struct Modbus: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "N reads of the basic block (52 registers); CPU, rate, DE timing.")
        @Option var serial: String
        @Option var count = 200
        @Flag(help: "Hold a (null) DE line like a GPIO direction pin, to measure turnaround timing.")
        var de = false
        @Flag(help: "Run as the poll thread does on a board: SCHED_FIFO and locked memory when permitted.")
        var realtime = false
        @Option(help: "Idle this many microseconds between transactions, as the poll loop does between cycles (0: back to back).")
        var gapUs = 0

        func run() throws {
            let line = LineSettings(baud: 9600, parity: .none)
            let port = try SerialPort(path: serial, line: line)
            try? MonotonicClock.setTimerSlackForCurrentThread(nanos: 1_000)
            let direction: DirectionControl = de ? TimedNullDirection() : NoDirectionControl()
            let rs485 = RS485Port(port: port, direction: direction, timing: line.timing)
            let master = RTUMaster(port: rs485, timing: line.timing)
            let request = ModbusRequest.readHoldingRegisters(unit: 1, start: KPM33BMap.basic.start, count: 52)
            var assertToWrite: [Double] = [], releaseAfterEnd: [Double] = []
            let fifo = realtime ? RealtimeScheduling.applyToCurrentThread().fifo : false
            let usage0 = BenchCommand.usage(), wall0 = MonotonicClock.nowNanos()
            var failed = 0
            // CPU of this thread inside the transaction calls only (without the idle gaps of --gap-us).
            var inCallNanos: UInt64 = 0
            assertToWrite.reserveCapacity(count)
            releaseAfterEnd.reserveCapacity(count)
            for i in 0..<count {
                if gapUs > 0 && i > 0 { MonotonicClock.sleep(nanos: UInt64(gapUs) * 1_000) }
                let call0 = BenchCommand.threadCPUNanos()
                if !BenchCommand.benchTransaction(master, request) { failed += 1 }
                inCallNanos += BenchCommand.threadCPUNanos() - call0
                if let t = master.lastSend {
                    assertToWrite.append(Double(t.writeStartNanos &- t.directionAssertedNanos) / 1e3)
                    releaseAfterEnd.append(Double(t.releaseAfterLastStopBitNanos) / 1e3)
                }
            }
            let usage1 = BenchCommand.usage()
            let cpu = usage1.user + usage1.system - usage0.user - usage0.system
            let wall = Double(MonotonicClock.nowNanos() - wall0) / 1e9
            func percentile(_ values: [Double], _ p: Double) -> Double {
                let sorted = values.sorted()
                return sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
            }
            BenchCommand.printJSON([
                "transactions": Double(count), "failed": Double(failed), "cpu_seconds": cpu, "wall_seconds": wall,
                "user_seconds": usage1.user - usage0.user, "system_seconds": usage1.system - usage0.system,
                "voluntary_switches": usage1.voluntary - usage0.voluntary,
                "involuntary_switches": usage1.involuntary - usage0.involuntary,
                "in_call_cpu_seconds": Double(inCallNanos) / 1e9, "gap_us": Double(gapUs),
                "de_assert_to_first_byte_us_p50": percentile(assertToWrite, 0.5),
                "de_assert_to_first_byte_us_max": assertToWrite.max() ?? 0,
                "de_release_after_last_stop_bit_us_p50": percentile(releaseAfterEnd, 0.5),
                "de_release_after_last_stop_bit_us_max": releaseAfterEnd.max() ?? 0,
                "character_time_us": Double(line.timing.characterNanos) / 1e3,
                "t35_us": Double(line.timing.t35Nanos) / 1e3,
                "sched_fifo": fifo ? 1 : 0,
            ])
        }
    }

    struct Poll: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Heap allocations per steady-state poll cycle (needs the LD_PRELOAD counter).")
        @Option var serial: String
        @Option var cycles = 50

        func run() throws {
            let settings = LinkSettings(serial: serial, line: LineSettings(baud: 9600, parity: .none), address: 1,
                                        direction: .none, responseTimeoutMs: 600, retries: 3)
            var plan = PollPlan()
            plan.energySeconds = 0.2 // energy and demand come due within the measured cycles too
            let connection = try MeterConnection(settings, plan: plan)
            let poller = connection.poller
            // Warm-up over a whole schedule (every group read at least twice), so one-time lazy initialisation of a
            // code path is not counted as steady state.
            for _ in 0..<10 {
                poller.runCycle()
                usleep(50_000)
            }
            guard let counter = BenchCommand.allocationCounter() else {
                printError("run under LD_PRELOAD=malloc_count.so to count allocations")
                throw ExitStatus.benchWithoutCounter.exit
            }
            let before = counter()
            for _ in 0..<cycles {
                poller.runCycle()
                usleep(50_000)
            }
            let after = counter()
            let s = poller.snapshot()
            BenchCommand.printJSON([
                "cycles": Double(cycles), "allocations": Double(after - before),
                "allocations_per_cycle": Double(after - before) / Double(cycles),
                "online": s.health == .online ? 1 : 0,
            ])
        }
    }
}
