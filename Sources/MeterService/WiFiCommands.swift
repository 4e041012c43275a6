import Platform
import DeviceState
import Dispatch

/// `wifi_config`, `wifi_status`, `wifi_scan` and `wifi_ap` over a `WiFiManager`.
///
/// WiFi calls block for seconds (nmcli waits for the radio), so every call runs on one serial queue of its own,
/// never on the HTTP event loop; that queue also orders them, so a scan never interleaves with a connect.
public struct WiFiCommands: Sendable {
    public let manager: WiFiManager
    public let queue: DispatchQueue
    public let now: @Sendable () -> Double

    public init(manager: WiFiManager, queue: DispatchQueue, now: @escaping @Sendable () -> Double = { MonotonicClock.nowSeconds() }) {
        self.manager = manager
        self.queue = queue
        self.now = now
    }

    public static let wifiFailed = APIErrorCode("wifi_failed", status: 502)

    struct ConfigParams: Decodable {
        var ssid: String?
        var password: String?
        var mode: String?
    }

    struct APParams: Decodable { var state: String }
    struct APPasswordParams: Decodable { var password: String }

    struct Network: Encodable {
        var ssid: String
        var signal: String
        var security: String
        var channel: String
    }

    struct ScanReply: Encodable {
        var networks: [Network]
        var result = "OK"
    }

    struct ConfigReply: Encodable {
        var ssid: String
        var mode: String
        /// The board's address on the new network, when the phone can still hear the answer (a concurrent radio
        /// keeps the access point up): where to find the board once the phone is back on that network.
        var IP: String?
        var message: String?
        var result = "OK"
    }

    private func onQueue<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            queue.async { continuation.resume(returning: work()) }
        }
    }

    public func register(into registry: inout CommandRegistry) {
        let manager = self.manager
        let now = self.now
        registry.register("wifi_status", async: { _ in
            let fields = await onQueue { manager.status(now: now()).apiFields }
            return .ok(fields.merging(["result": "OK"]) { a, _ in a })
        })
        registry.register("wifi_scan", async: { _ in
            let networks = await onQueue { manager.scan() }
            return .ok(ScanReply(networks: networks.map {
                Network(ssid: $0.ssid, signal: String($0.signalPercent), security: $0.security,
                        channel: String($0.channel))
            }))
        })
        registry.register("wifi_config", async: { request in
            let params: ConfigParams
            switch request.parameters(ConfigParams.self) {
            case .success(let p): params = p
            case .failure(let e): return .error(.invalidParameter, e.message)
            }
            let wanted = WiFiConfigRequest(ssid: params.ssid, password: params.password.map(Secret.init),
                                           mode: params.mode)
            let outcome = await onQueue { manager.configure(wanted, now: now()) }
            switch outcome {
            case .success(let config):
                let address = await onQueue { manager.clientAddress() }
                let concurrent = manager.backend.supportsConcurrentAPAndClient
                return .ok(ConfigReply(
                    ssid: config.ssid, mode: config.mode.rawValue, IP: address,
                    message: address.map { "joined \(config.ssid): the board is at http://\($0)/ on that network" }
                        ?? (concurrent ? nil : "joined \(config.ssid); the set-up access point has closed")))
            case .failure(let failure):
                return .error(Self.wifiFailed, "\(failure); the previous configuration stays and the set-up access point stays open")
            }
        })
        // `meterext wifi ap-password`: protected (the token, or the board itself); the password is never echoed.
        registry.register("wifi_ap_password", async: { request in
            let params: APPasswordParams
            switch request.parameters(APPasswordParams.self) {
            case .success(let p): params = p
            case .failure(let e): return .error(.invalidParameter, e.message)
            }
            if let problem = WiFiAccessPointPassword.problem(with: params.password) {
                return .error(.invalidParameter, problem)
            }
            let failure: String? = await onQueue {
                do { try manager.setAccessPointPassword(Secret(params.password), now: now()); return nil } catch {
                    return "cannot store the access point password: \(error)"
                }
            }
            if let failure { return .error(Self.wifiFailed, failure) }
            return .ok(["ap-ssid": manager.status(now: now()).accessPoint.ssid, "result": "OK"])
        })
        registry.register("wifi_ap", async: { request in
            let open: Bool
            switch request.parameters(APParams.self) {
            case .success(let p) where p.state == "on": open = true
            case .success(let p) where p.state == "off": open = false
            case .success: return .error(.invalidParameter, "field 'state' must be \"on\" or \"off\"")
            case .failure(let e): return .error(.invalidParameter, e.message)
            }
            let result = await onQueue { open ? manager.openAccessPoint(now: now()) : manager.closeAccessPoint(now: now()) }
            switch result {
            case .success: return .ok(["ap": open ? "open" : "closed", "result": "OK"])
            case .failure(let e): return .error(Self.wifiFailed, "\(e)")
            }
        })
    }
}
