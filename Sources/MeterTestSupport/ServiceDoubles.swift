import MeterService
import Synchronization

// Test doubles for MeterService's protocols. A target of its own, linked only into test targets and fuzzers: the
// firmware never ships them.

public final class InMemoryDeviceSettings: DeviceSettings {
    private let state = Mutex<(key: String?, resets: Int)>((nil, 0))
    public init() {}
    public func setMeterKey(_ key: String) throws { state.withLock { $0.key = key } }
    public func factoryReset() throws { state.withLock { $0 = (nil, $0.resets + 1) } }
    public var meterKey: String? { state.withLock { $0.key } }
    public var factoryResets: Int { state.withLock { $0.resets } }
}

public final class RecordingSystemControl: SystemControl {
    private let count = Mutex(0)
    public init() {}
    public func restartService() { count.withLock { $0 += 1 } }
    public var restarts: Int { count.withLock { $0 } }
}

public struct FixedNetworkInfo: NetworkInfo {
    public var info: IPInfo?
    public var mac: String?
    public init(info: IPInfo?, mac: String?) {
        self.info = info
        self.mac = mac
    }
    public func ipInfo() -> IPInfo? { info }
    public func macAddress() -> String? { mac }
}
