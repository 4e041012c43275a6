import ArgumentParser
import Fleet
import FoundationEssentials
import Glibc
import KPM33B
import Platform

/// Issue 16: `make bench`'s uplink figures — how fast a backlog of intervals drains into a broker, and what the
/// process's memory does meanwhile (the uplink holds at most its window; the backlog stays in the store).
/// Not a test: prints JSON figures.
struct FleetBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-mqtt", abstract: "Drain a synthetic backlog of intervals into a broker (prints JSON).",
        shouldDisplay: false)

    @Option(help: "Broker URL (mqtt://127.0.0.1:1883).")
    var mqtt: String

    @Option(help: "Intervals in the backlog.")
    var backlog: Int = 10_000

    @Option(help: "State directory for the cursor file.")
    var stateDir: String

    @Option(help: "QoS 1 messages in flight.")
    var window: Int = 8

    /// A store of `count` intervals that costs no memory: each is made from its seq when read.
    struct SyntheticStore: IntervalSource {
        let count: Int64
        func intervals(meter: UInt8, afterSeq: Int64, limit: Int) throws -> [UplinkInterval] {
            guard afterSeq < count else { return [] }
            return (afterSeq + 1...min(count, afterSeq + Int64(limit))).map { seq in
                let end = 1_700_000_000 + seq * 900
                return UplinkInterval(seq: seq, start: end - 900, end: end, values: [
                    .init(obis: "1-0:1.8.0.255", value: 1000 + Double(seq) * 0.25),
                    .init(obis: "1-0:2.8.0.255", value: 10 + Double(seq) * 0.01),
                    .init(obis: "1-0:16.7.0.255", value: 1000),
                ])
            }
        }
        func lastSeq(meter: UInt8) throws -> Int64 { count }
    }

    /// A meter that is always online with a serial number, so the uplink publishes for it.
    final class BenchLink: MeterLink, @unchecked Sendable {
        let snap: MeterSnapshot
        init() {
            var s = MeterSnapshot()
            s.health = .online
            s.parameters = MeterParameters(serialNumber: "33B0000BENCH1", modbusAddress: 1, lineSettingsWord: 3,
                                           controlModeWord: 0xDD22, loadThresholdKW: 0,
                                           clock: MeterClock(year: 26, month: 1, day: 1, hour: 0, minute: 0, second: 0),
                                           prepaidEnergyKWh: 0, overdraftKWh: 0, forcedPowerWords: (0, 0),
                                           wirelessStatusWord: 0)
            snap = s
        }
        func snapshot() -> MeterSnapshot { snap }
        func setRelay(closed: Bool) async throws -> RelayState { RelayState(bits: 0) }
        var lineDescription: String { "bench" }
    }

    static func rssKiB() -> Int {
        guard let bytes = try? readSmallFile("/proc/self/status") else { return 0 }
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") where line.hasPrefix("VmRSS:") {
            return Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]) ?? 0
        }
        return 0
    }

    func run() throws {
        var settings = UplinkSettings(broker: try BrokerURL(parsing: mqtt))
        settings.clientID = "meterext-bench-\(getpid())"
        settings.liveInterval = 3600
        var options = MQTTUplink.Options(settings: settings)
        options.machine.window = window
        try? AtomicFile.makeDirectory(stateDir)
        let uplink = MQTTUplink(options: options, meters: [UplinkMeter(address: 1, link: BenchLink())],
                                source: SyntheticStore(count: Int64(backlog)), stateDirectory: stateDir,
                                log: { _, _ in })
        let rssBefore = Self.rssKiB()
        let start = MonotonicClock.nowSeconds()
        try uplink.start()
        var peakRSS = rssBefore, peakInFlight = 0
        var acked: UInt64 = 0
        while MonotonicClock.nowSeconds() - start < 300 {
            let s = uplink.status()
            peakInFlight = max(peakInFlight, s.inFlight)
            peakRSS = max(peakRSS, Self.rssKiB())
            acked = s.acknowledged
            if s.backlog == 0 && s.acknowledged >= UInt64(backlog) { break }
            MonotonicClock.sleep(nanos: 20_000_000)
        }
        let seconds = MonotonicClock.nowSeconds() - start
        uplink.stop()
        let figures: [String: Double] = [
            "intervals": Double(acked), "seconds": seconds, "intervals_per_s": Double(acked) / seconds,
            "rss_before_kib": Double(rssBefore), "rss_peak_kib": Double(peakRSS), "peak_in_flight": Double(peakInFlight),
            "window": Double(window),
        ]
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        print(String(decoding: try encoder.encode(figures), as: UTF8.self))
    }
}
