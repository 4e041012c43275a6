import FirmwareUpdate
import MeterService

/// `firmware_update`, `download_file` and `request_post` on the `/api` dispatcher, plus the `update` object of
/// `system_status`. Downloads run on the update code's own threads, never on the event loop.
struct UpdateAPI: Sendable {
    let updater: FirmwareUpdater
    let network: NetworkCommands

    struct FirmwareParams: Decodable {
        var firmware_uri: String
        var cert: String?
    }

    struct DownloadParams: Decodable {
        var file_uri: String
        var cert: String?
    }

    struct PostParams: Decodable {
        var file_uri: String
        var message: String
        var cert: String?
    }

    /// Client mistakes are 400, a busy updater 409, failures of the far end 502.
    static func result(_ error: UpdateError) -> CommandResult {
        .error(APIErrorCode(error.code, status: httpStatus(error)), error.message)
    }

    /// Also the status of a refused `POST /ota`.
    static func httpStatus(_ error: UpdateError) -> Int {
        let status: Int
        switch error.code {
        case "busy", "trial_running", "slot_in_use", "downgrade": status = 409
        case "forbidden_address": status = 403
        case "quota_exceeded": status = 507
        case "connect_failed", "connection_lost", "dns_error", "http_status", "stalled", "timeout", "tls_error",
             "transfer_failed", "too_many_redirects", "truncated", "image_truncated":
            status = 502
        default: status = 400
        }
        return status
    }

    func statusFields() -> [String: String] {
        let s = updater.status()
        var fields = ["state": s.state.rawValue, "bytes": String(s.bytes), "running": s.running]
        if let total = s.total { fields["total"] = String(total) }
        if let percent = s.percent { fields["percent"] = String(percent) }
        if let version = s.version { fields["version"] = version }
        if let error = s.lastError { fields["last_error"] = "\(error.code): \(error.message)" }
        return fields
    }

    func register(into registry: inout CommandRegistry) {
        let updater = self.updater, network = self.network
        registry.register("firmware_update", sync: { request in
            switch request.parameters(FirmwareParams.self) {
            case .failure(let e): return .error(.invalidParameter, e.message)
            case .success(let p):
                switch updater.startUpdate(firmwareURI: p.firmware_uri, cert: p.cert) {
                case .success(let accepted): return .ok(accepted)
                case .failure(let error): return Self.result(error)
                }
            }
        })
        registry.register("download_file", async: { request in
            switch request.parameters(DownloadParams.self) {
            case .failure(let e): return .error(.invalidParameter, e.message)
            case .success(let p):
                switch await network.downloadFile(fileURI: p.file_uri, cert: p.cert) {
                case .success(let file): return .ok(file)
                case .failure(let error): return Self.result(error)
                }
            }
        })
        registry.register("request_post", async: { request in
            switch request.parameters(PostParams.self) {
            case .failure(let e): return .error(.invalidParameter, e.message)
            case .success(let p):
                switch await network.requestPost(fileURI: p.file_uri, message: p.message, cert: p.cert) {
                case .success(let reply): return .ok(reply)
                case .failure(let error): return Self.result(error)
                }
            }
        })
    }
}
