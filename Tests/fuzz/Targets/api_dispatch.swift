// Fuzz target: the `/api` command decoder and dispatcher (`CommandDispatcher.dispatch(body:)` over the full
// `MeterAPI` registry), fed arbitrary request bodies.
//
// Every body is dispatched twice: against a fake `MeterLink` holding a fixed online snapshot (every group read,
// one value NaN and one infinite, as a confused meter could report) and against one whose meter is offline with no
// data. Async commands (`relay_set`) are awaited; `afterReply` actions run against in-memory settings.
// Invariants: every reply body is exactly one JSON object (checked by an independent RFC 8259 checker) with
// "result" "OK" or "ERROR", its HTTP status is 200–599, and an offline meter's `meter_reading` carries no data
// entry; no crash, no sanitizer report.
import Dispatch
import FoundationEssentials
import KPM33B
import MeterService
import MeterTestSupport
import Synchronization

final class FixedLink: MeterLink {
    let fixed: MeterSnapshot
    let lineDescription = "9600 8E1, address 1"
    init(_ s: MeterSnapshot) { fixed = s }
    func snapshot() -> MeterSnapshot { fixed }
    func setRelay(closed: Bool) async throws -> RelayState {
        guard fixed.health == .online else { throw MeterCommandError.failed("no reply") }
        return RelayState(bits: closed ? 7 : 0)
    }
}

private func onlineSnapshot() -> MeterSnapshot {
    var s = MeterSnapshot()
    s.generation = 7
    s.health = .online
    s.publishedAt = 1_763_700_005
    func block(_ n: Int, _ base: Float) -> [Float] { (0..<n).map { base + Float($0) * 1.25 } }
    s.basic = block(26, 230)
    s.basic![3] = .nan
    s.basic![9] = -.infinity
    s.energy = block(26, 1001.5)
    s.demand = block(3, 1500)
    s.history = block(130, 10_000)
    s.parameters = MeterParameters(
        serialNumber: "33B0012345678", modbusAddress: 1, lineSettingsWord: 3, controlModeWord: 0xDD22,
        loadThresholdKW: 7, clock: MeterClock(year: 25, month: 11, day: 21, hour: 10, minute: 4, second: 5),
        prepaidEnergyKWh: 0, overdraftKWh: 0, forcedPowerWords: (0, 0), wirelessStatusWord: 0)
    s.relay = RelayState(bits: 5)
    for g in RegisterGroup.allCases { s.readAt[g.rawValue] = 1_763_700_000 + Int64(g.rawValue) }
    s.counters.transactions = 42
    s.counters.timeouts = 3
    s.lastError = LinkError(kind: .crc, message: "CRC error \"quoted\" \u{1}", at: 1_763_699_999)
    return s
}

private func offlineSnapshot() -> MeterSnapshot {
    var s = MeterSnapshot()
    s.generation = 9
    s.health = .offline
    s.publishedAt = 1_763_700_005
    s.lastError = LinkError(kind: .timeout, message: "no reply", at: 1_763_700_004)
    return s
}

private func makeDispatcher(_ link: FixedLink) -> CommandDispatcher {
    let api = MeterAPI(
        link: link, settings: InMemoryDeviceSettings(), system: RecordingSystemControl(),
        network: FixedNetworkInfo(info: IPInfo(interface: "wlan0", address: "192.168.0.158", netmask: "255.255.255.0",
                                               gateway: "192.168.0.1"), mac: "b8:27:eb:01:02:03"),
        identity: DeviceIdentity(softwareVersion: "1.2.3", hardwareVersion: "fuzz"),
        operatingStatus: { 1 }, calendar: UTCSettlementCalendar(), now: { 1_763_719_999 })
    return api.dispatcher()
}

private let online = makeDispatcher(FixedLink(onlineSnapshot()))
private let offline = makeDispatcher(FixedLink(offlineSnapshot()))

private final class Box: Sendable {
    let value = Mutex<APIResponse?>(nil)
}

private func blockingWait(_ work: @escaping @Sendable () async -> APIResponse) -> APIResponse {
    let box = Box()
    let done = DispatchSemaphore(value: 0)
    Task {
        let r = await work()
        box.value.withLock { $0 = r }
        done.signal()
    }
    done.wait()
    return box.value.withLock { $0 }!
}

private func check(_ response: APIResponse, body: [UInt8], meterOffline: Bool) {
    let text = { String(decoding: response.body, as: UTF8.self) }
    fuzzCheck(StrictJSON.isObject(response.body), "reply is not one JSON object: \(text())")
    fuzzCheck((200...599).contains(response.status), "HTTP status \(response.status)")
    let ok = contains(response.body, #""result":"OK""#), error = contains(response.body, #""result":"ERROR""#)
    fuzzCheck(ok != error, "reply without exactly one result: \(text())")
    if meterOffline && contains(response.body, #""OBIS""#) {
        fuzzFail("data served while the meter is offline: \(text())")
    }
    response.afterReply?()
}

private func contains(_ haystack: [UInt8], _ needle: StaticString) -> Bool {
    let n = needle.utf8CodeUnitCount
    guard haystack.count >= n else { return false }
    let p = needle.utf8Start
    outer: for i in 0...(haystack.count - n) {
        for k in 0..<n where haystack[i + k] != p[k] { continue outer }
        return true
    }
    return false
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzAPIDispatch(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let body = Array(UnsafeBufferPointer(start: data, count: size))
    for (dispatcher, isOffline) in [(online, false), (offline, true)] {
        switch dispatcher.dispatch(body: body) {
        case .reply(let r): check(r, body: body, meterOffline: isOffline)
        case .pending(let work): check(blockingWait(work), body: body, meterOffline: isOffline)
        }
        check(dispatcher.health(), body: [], meterOffline: isOffline)
    }
    return 0
}
