import CCurl
import Glibc

/// Limits every outgoing transfer runs under. A stalled server is cut off by the low-speed rule (less than
/// `lowSpeedBytesPerSecond` for `lowSpeedSeconds`), not by a total timeout, so a slow but moving 30 MB download on a
/// weak WiFi link still completes.
public struct TransferLimits: Sendable, Equatable {
    public var maxBytes: Int64
    public var connectTimeoutSeconds: Int
    public var lowSpeedBytesPerSecond: Int
    public var lowSpeedSeconds: Int
    /// 0 = no overall limit (downloads); request_post uses one.
    public var totalTimeoutSeconds: Int
    public var maxRedirects: Int
    /// Checked on every address a connection is about to be opened to (redirect hops included).
    public var addressPolicy: OutgoingAddressPolicy

    public init(maxBytes: Int64 = 64 << 20, connectTimeoutSeconds: Int = 15, lowSpeedBytesPerSecond: Int = 64,
                lowSpeedSeconds: Int = 30, totalTimeoutSeconds: Int = 0, maxRedirects: Int = 5,
                addressPolicy: OutgoingAddressPolicy = .board) {
        self.addressPolicy = addressPolicy
        self.maxBytes = maxBytes
        self.connectTimeoutSeconds = connectTimeoutSeconds
        self.lowSpeedBytesPerSecond = lowSpeedBytesPerSecond
        self.lowSpeedSeconds = lowSpeedSeconds
        self.totalTimeoutSeconds = totalTimeoutSeconds
        self.maxRedirects = maxRedirects
    }
}

/// Which certificates an https transfer trusts.
public enum TLSTrust: Sendable, Equatable {
    /// Only the CA certificates in this PEM file (the board's certificate folder).
    case caFile(String)
    /// The operating system's CA store (`"cert":"system"`).
    case system
}

/// One HTTP(S) request through libcurl's easy interface, blocking the calling thread. libcurl does HTTP, TLS
/// (OpenSSL), redirects, timeouts and size limits; this type only sets options and maps its errors to reasons.
enum HTTPTransfer {
    struct Outcome {
        var status: Int
        var bytes: Int64
        /// The data sink asked to stop (reply cap reached); not an error for request_post.
        var stoppedBySink: Bool
    }

    final class Context {
        let onData: (UnsafeRawBufferPointer) -> Bool
        let onProgress: (Int64, Int64) -> Void
        let maxBytes: Int64
        var bytes: Int64 = 0
        var overCap = false
        var stoppedBySink = false
        var policy = OutgoingAddressPolicy.board
        /// Addresses the policy refused ("169.254.169.254: a link-local address ...").
        var refused: [String] = []

        init(maxBytes: Int64, onData: @escaping (UnsafeRawBufferPointer) -> Bool,
             onProgress: @escaping (Int64, Int64) -> Void) {
            self.maxBytes = maxBytes
            self.onData = onData
            self.onProgress = onProgress
        }
    }

    /// libcurl is loaded (dlopen) at the first transfer, not linked: until then the service maps none of it nor of
    /// the ~30 libraries it brings (issue 18: docs/benchmarks.md, "Memory and libcurl"). nil when it is ready, else
    /// why not (the message names the Debian package).
    static func loadLibrary() -> String? {
        guard let error = ccurl_load() else { return nil }
        return String(cString: error)
    }

    static func isHTTPURL(_ url: String) -> (ok: Bool, https: Bool) {
        let lower = url.lowercased()
        let valid = url.utf8.count <= 2048 && !url.utf8.contains(where: { $0 <= 0x20 || $0 == 0x7F })
        if valid && lower.hasPrefix("https://") && lower.count > 8 { return (true, true) }
        if valid && lower.hasPrefix("http://") && lower.count > 7 { return (true, false) }
        return (false, false)
    }

    static func perform(url: String, post: (body: [UInt8], contentType: String)? = nil, trust: TLSTrust?,
                        limits: TransferLimits, onData: @escaping (UnsafeRawBufferPointer) -> Bool,
                        onProgress: @escaping (Int64, Int64) -> Void = { _, _ in }) throws -> Outcome {
        if let error = loadLibrary() { throw UpdateError("transfer_failed", error) }
        guard let handle = ccurl_easy_init() else {
            throw UpdateError("transfer_failed", "libcurl could not be initialised")
        }
        defer { ccurl_easy_cleanup(handle) }
        let context = Context(maxBytes: limits.maxBytes, onData: onData, onProgress: onProgress)
        context.policy = limits.addressPolicy
        let errorBuffer = UnsafeMutablePointer<CChar>.allocate(capacity: Int(CURL_ERROR_SIZE))
        errorBuffer[0] = 0
        defer { errorBuffer.deallocate() }
        var headers: UnsafeMutablePointer<curl_slist>?
        defer { ccurl_slist_free_all(headers) }

        var setupFailed = CURLE_OK
        func check(_ rc: CURLcode) { if rc != CURLE_OK && setupFailed == CURLE_OK { setupFailed = rc } }
        check(ccurl_set_string(handle, CURLOPT_URL, url))
        check(ccurl_set_string(handle, CURLOPT_PROTOCOLS_STR, "http,https"))
        check(ccurl_set_string(handle, CURLOPT_REDIR_PROTOCOLS_STR, "http,https"))
        check(ccurl_set_long(handle, CURLOPT_FOLLOWLOCATION, limits.maxRedirects > 0 ? 1 : 0))
        check(ccurl_set_long(handle, CURLOPT_MAXREDIRS, limits.maxRedirects))
        check(ccurl_set_long(handle, CURLOPT_NOSIGNAL, 1))
        check(ccurl_set_long(handle, CURLOPT_CONNECTTIMEOUT, limits.connectTimeoutSeconds))
        check(ccurl_set_long(handle, CURLOPT_LOW_SPEED_LIMIT, limits.lowSpeedBytesPerSecond))
        check(ccurl_set_long(handle, CURLOPT_LOW_SPEED_TIME, limits.lowSpeedSeconds))
        check(ccurl_set_long(handle, CURLOPT_TIMEOUT, limits.totalTimeoutSeconds))
        check(ccurl_set_offset(handle, CURLOPT_MAXFILESIZE_LARGE, curl_off_t(limits.maxBytes)))
        check(ccurl_set_string(handle, CURLOPT_USERAGENT, "meterext"))
        if limits.addressPolicy.refuseLocal {
            // No proxy from the environment (http_proxy, …): the address rule checks where the connection goes,
            // and through a proxy that would be the proxy, not the target.
            check(ccurl_set_string(handle, CURLOPT_PROXY, ""))
        }
        check(ccurl_set_pointer(handle, CURLOPT_ERRORBUFFER, errorBuffer))
        switch trust {
        case .caFile(let path):
            check(ccurl_set_string(handle, CURLOPT_CAINFO, path))
            check(ccurl_set_string(handle, CURLOPT_CAPATH, nil)) // only the named CA, not the system store too
        case .system, nil:
            break
        }
        if let post {
            headers = ccurl_slist_append(headers, "Content-Type: " + post.contentType)
            headers = ccurl_slist_append(headers, "Expect:")
            check(ccurl_set_pointer(handle, CURLOPT_HTTPHEADER, headers))
            check(ccurl_set_long(handle, CURLOPT_POST, 1))
            check(ccurl_set_offset(handle, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(post.body.count)))
            post.body.withUnsafeBytes { raw in
                check(ccurl_set_pointer(handle, CURLOPT_COPYPOSTFIELDS, UnsafeMutableRawPointer(mutating: raw.baseAddress)))
            }
        }
        let opaque = Unmanaged.passUnretained(context).toOpaque()
        check(ccurl_set_write_function(handle, { data, size, count, raw in
            let context = Unmanaged<HTTPTransfer.Context>.fromOpaque(raw!).takeUnretainedValue()
            let length = size * count
            if context.bytes + Int64(length) > context.maxBytes {
                context.overCap = true
                return 0
            }
            context.bytes += Int64(length)
            guard context.onData(UnsafeRawBufferPointer(start: data, count: length)) else {
                context.stoppedBySink = true
                return 0
            }
            return length
        }, opaque))
        check(ccurl_set_progress_function(handle, { raw, total, now, _, _ in
            Unmanaged<HTTPTransfer.Context>.fromOpaque(raw!).takeUnretainedValue().onProgress(Int64(now), Int64(total))
            return 0
        }, opaque))
        // Every connection (first request, each redirect hop, each address of a name) opens its socket here: the
        // resolved address is checked before the socket exists, and the socket is close-on-exec.
        check(ccurl_set_opensocket_function(handle, { raw, _, address in
            let context = Unmanaged<HTTPTransfer.Context>.fromOpaque(raw!).takeUnretainedValue()
            guard let address else { return -1 }
            let family = address.pointee.family
            let sockaddrStart = UnsafeRawPointer(address) + MemoryLayout<curl_sockaddr>.offset(of: \.addr)!
            let offset = family == AF_INET ? MemoryLayout<sockaddr_in>.offset(of: \.sin_addr)!
                : MemoryLayout<sockaddr_in6>.offset(of: \.sin6_addr)!
            guard family == AF_INET || family == AF_INET6,
                  let ip = IPAddress(family: family, bytes: sockaddrStart + offset) else {
                context.refused.append("address family \(family): not an IP address")
                return -1
            }
            if let reason = context.policy.refusal(for: ip) {
                context.refused.append("\(ip) is \(reason)")
                return -1
            }
            return socket(family, address.pointee.socktype | Int32(SOCK_CLOEXEC.rawValue), address.pointee.protocol)
        }, opaque))
        guard setupFailed == CURLE_OK else {
            throw UpdateError("transfer_failed", "libcurl rejected an option: \(String(cString: ccurl_easy_strerror(setupFailed)))")
        }

        let rc = withExtendedLifetime(context) { ccurl_easy_perform(handle) }
        var status = 0
        if ccurl_get_long(handle, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK { status = 0 }
        if rc == CURLE_OK || (rc == CURLE_WRITE_ERROR && context.stoppedBySink) {
            return Outcome(status: status, bytes: context.bytes, stoppedBySink: context.stoppedBySink)
        }
        let detail = errorBuffer[0] != 0 ? String(cString: errorBuffer) : String(cString: ccurl_easy_strerror(rc))
        throw describe(rc, detail: detail, context: context, limits: limits, trust: trust)
    }

    static func describe(_ rc: CURLcode, detail: String, context: Context, limits: TransferLimits,
                         trust: TLSTrust?) -> UpdateError {
        if !context.refused.isEmpty, rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST {
            return UpdateError("forbidden_address", "outgoing requests never go to loopback, link-local or the "
                               + "board's own addresses (redirects included): "
                               + context.refused.joined(separator: "; "))
        }
        switch rc {
        case CURLE_FILESIZE_EXCEEDED:
            return UpdateError("too_large", "the file is larger than the limit of \(limits.maxBytes) bytes")
        case CURLE_WRITE_ERROR where context.overCap:
            return UpdateError("too_large", "the download passed the limit of \(limits.maxBytes) bytes")
        case CURLE_OPERATION_TIMEDOUT:
            if detail.lowercased().contains("too slow") {
                return UpdateError("stalled", "the download stalled (less than \(limits.lowSpeedBytesPerSecond) "
                                   + "bytes/s for \(limits.lowSpeedSeconds) s) after \(context.bytes) bytes")
            }
            return UpdateError("timeout", "the server did not answer in time: \(detail)")
        case CURLE_PARTIAL_FILE:
            return UpdateError("truncated", "the connection closed after \(context.bytes) bytes, before the end of "
                               + "the file: \(detail)")
        case CURLE_PEER_FAILED_VERIFICATION, CURLE_SSL_CONNECT_ERROR, CURLE_SSL_CACERT_BADFILE,
             CURLE_SSL_CERTPROBLEM, CURLE_SSL_CIPHER, CURLE_SSL_ISSUER_ERROR:
            var trusted = ""
            if case .caFile(let path) = trust { trusted = " (trusted CA file: \(FileIO.baseName(path)))" }
            return UpdateError("tls_error", "the TLS connection could not be verified\(trusted): \(detail)")
        case CURLE_COULDNT_RESOLVE_HOST:
            return UpdateError("dns_error", "the host name could not be resolved: \(detail)")
        case CURLE_COULDNT_CONNECT:
            return UpdateError("connect_failed", "could not connect: \(detail)")
        case CURLE_UNSUPPORTED_PROTOCOL, CURLE_URL_MALFORMAT:
            return UpdateError("bad_uri", "the address is not a valid http or https URL: \(detail)")
        case CURLE_TOO_MANY_REDIRECTS:
            return UpdateError("too_many_redirects", "more than \(limits.maxRedirects) redirects")
        case CURLE_GOT_NOTHING, CURLE_RECV_ERROR, CURLE_SEND_ERROR:
            return UpdateError("connection_lost", "the connection broke after \(context.bytes) bytes: \(detail)")
        default:
            return UpdateError("transfer_failed", detail)
        }
    }
}

/// Resolves the `cert` field of a command to a CA file in the board's certificate folder.
public struct CertificateStore: Sendable {
    public static let defaultName = "ca_cert.pem"
    public let directory: String

    public init(directory: String) { self.directory = directory }

    static func isSafeName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 128 && !name.hasPrefix(".") && name.utf8.allSatisfy {
            ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x61 && $0 <= 0x7A)
                || $0 == 0x2E || $0 == 0x5F || $0 == 0x2D
        }
    }

    /// The trust for `url`: nil for http (the cert is ignored); for https the named CA file, which must exist.
    /// `"system"` selects the operating system's CA store.
    public func trust(for url: String, cert: String?) throws -> TLSTrust? {
        let (valid, https) = HTTPTransfer.isHTTPURL(url)
        guard valid else {
            throw UpdateError("bad_uri", "the address must start with http:// or https:// and contain no spaces")
        }
        let name = (cert?.isEmpty ?? true) ? CertificateStore.defaultName : cert!
        guard CertificateStore.isSafeName(name) else {
            throw UpdateError("bad_cert", "certificate names are plain file names from the certificate folder "
                              + "(letters, digits, . _ -), not paths")
        }
        guard https else { return nil }
        if name == "system" { return .system }
        let path = directory + "/" + name
        guard FileIO.isRegularFile(path) else {
            throw UpdateError("cert_missing", "the CA certificate '\(name)' is not on the board (looked in "
                              + "\(directory)); upload it or name another one with \"cert\"")
        }
        return .caFile(path)
    }
}
