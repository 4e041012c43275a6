import Glibc
import Synchronization

public struct DownloadedFile: Encodable, Equatable, Sendable {
    public var result = "OK"
    public var name: String
    public var size: Int64
    public var sha256: String
}

public struct PostReply: Encodable, Equatable, Sendable {
    public var result = "OK"
    /// The upstream HTTP status code.
    public var status: Int
    /// The upstream reply body (UTF-8, invalid bytes replaced), at most `maxPostReplyBytes`.
    public var body: String
    public var truncated: Bool
}

/// `download_file` and `request_post`. Both block while the transfer runs; the async variants run it on a
/// dedicated thread so the HTTP server's event loop stays free.
public struct NetworkCommands: Sendable {
    public let configuration: UpdateConfiguration

    public init(configuration: UpdateConfiguration) { self.configuration = configuration }

    public var downloadsDirectory: String { configuration.stateDirectory + "/downloads" }

    /// Bytes promised to downloads under way, per downloads folder: two at once cannot both fill the last space.
    private static let reserved = Mutex<[String: Int64]>([:])

    /// Removes partial files (`.part-*`) left by a download cut short (crash, power cut). Call once at start,
    /// before any download runs.
    public func removeLeftoverPartialFiles() {
        for name in FileIO.listDirectory(downloadsDirectory) where name.hasPrefix(".part-") {
            configuration.log("removing the partial download \(name) left from before the last start")
            unlink(downloadsDirectory + "/" + name)
        }
    }

    /// Bytes of finished files in the downloads folder (partial files of running downloads are counted by
    /// their reservation instead).
    public func downloadsFolderBytes() -> Int64 {
        FileIO.listDirectory(downloadsDirectory).filter { !$0.hasPrefix(".") }.reduce(Int64(0)) {
            $0 + (FileIO.fileSize(downloadsDirectory + "/" + $1) ?? 0)
        }
    }

    static func describeFill(_ used: Int64, of quota: Int64) -> String {
        let percent = quota > 0 ? min(100, used * 100 / quota) : 100
        return "the downloads folder holds \(used) of its \(quota) bytes (\(percent)% full)"
    }

    /// Claims room for one download: the per-file limit or what is left of the quota, whichever is smaller.
    func reserveRoom() throws -> (cap: Int64, quotaBound: Bool) {
        let quota = configuration.downloadsQuotaBytes
        let used = downloadsFolderBytes()
        let directory = downloadsDirectory
        return try Self.reserved.withLock { reserved in
            let inFlight = reserved[directory, default: 0]
            let left = quota - used - inFlight
            guard left > 0 else {
                throw UpdateError("quota_exceeded", Self.describeFill(used + inFlight, of: quota)
                                  + (inFlight > 0 ? " counting downloads under way" : "")
                                  + "; delete files from \(directory) before downloading more")
            }
            let cap = min(configuration.maxDownloadBytes, left)
            reserved[directory] = inFlight + cap
            return (cap, cap < configuration.maxDownloadBytes)
        }
    }

    func releaseRoom(_ bytes: Int64) {
        let directory = downloadsDirectory
        Self.reserved.withLock { $0[directory, default: 0] -= bytes }
    }

    /// A file name from the URL's last path component: only letters, digits and `. _ -`, no leading dot, at most
    /// 100 characters; "download" if nothing is left.
    public static func safeFileName(fromURL url: String) -> String {
        var rest = Substring(url)
        if let colon = rest.firstIndex(of: ":"), rest[colon...].hasPrefix("://") {
            rest = rest[rest.index(colon, offsetBy: 3)...]
        }
        if let cut = rest.firstIndex(where: { $0 == "?" || $0 == "#" }) { rest = rest[..<cut] }
        let path = rest.firstIndex(of: "/").map { rest[$0...] } ?? ""
        let last = path.split(separator: "/").last.map(String.init) ?? ""
        var name = String(last.unicodeScalars.map { scalar -> Character in
            let c = Character(scalar)
            return scalar.isASCII && (c.isLetter || c.isNumber || c == "." || c == "_" || c == "-") ? c : "_"
        })
        while name.hasPrefix(".") { name.removeFirst() }
        if name.count > 100 { name = String(name.suffix(100)) }
        while name.hasPrefix(".") { name.removeFirst() }
        return name.isEmpty ? "download" : name
    }

    /// "x.bin" → "x.bin", "x-1.bin", "x-2.bin", ...
    static func candidate(_ name: String, _ n: Int) -> String {
        guard n > 0 else { return name }
        if let dot = name.lastIndex(of: "."), dot != name.startIndex {
            return "\(name[..<dot])-\(n)\(name[dot...])"
        }
        return "\(name)-\(n)"
    }

    public func downloadFile(fileURI: String, cert: String?) -> Result<DownloadedFile, UpdateError> {
        Result {
            let trust = try configuration.certificates.trust(for: fileURI, cert: cert)
            try FileIO.makeDirectories(downloadsDirectory)
            let (cap, quotaBound) = try reserveRoom()
            defer { releaseRoom(cap) }
            let temp = downloadsDirectory + "/.part-\(getpid())-\(UInt32.random(in: 0 ... .max))"
            let fd = try FileIO.openFile(temp, O_WRONLY | O_CREAT | O_EXCL, mode: 0o644)
            var fdOpen = true
            defer {
                if fdOpen { close(fd) }
                unlink(temp)
            }
            var hasher = SHA256Hasher()
            var writeError: UpdateError?
            let outcome: HTTPTransfer.Outcome
            do {
                outcome = try HTTPTransfer.perform(
                    url: fileURI, trust: trust,
                    limits: configuration.transferLimits(maxBytes: cap),
                    onData: { chunk in
                        hasher.update(chunk)
                        do { try FileIO.writeAll(fd, chunk, path: temp); return true } catch {
                            writeError = error as? UpdateError
                            return false
                        }
                    })
            } catch let error as UpdateError where error.code == "too_large" && quotaBound {
                throw UpdateError("quota_exceeded", "the file does not fit: only \(cap) bytes were left; "
                                  + Self.describeFill(downloadsFolderBytes(), of: configuration.downloadsQuotaBytes))
            }
            if let writeError { throw writeError }
            guard (200..<300).contains(outcome.status) else {
                throw UpdateError("http_status", "the server answered HTTP \(outcome.status)")
            }
            try FileIO.fsyncFile(fd, path: temp)
            close(fd)
            fdOpen = false
            // link() fails with EEXIST instead of replacing: an existing file of the same name is never overwritten.
            let base = NetworkCommands.safeFileName(fromURL: fileURI)
            for n in 0..<1000 {
                let name = NetworkCommands.candidate(base, n)
                if link(temp, downloadsDirectory + "/" + name) == 0 {
                    try FileIO.fsyncDirectory(downloadsDirectory)
                    configuration.log("downloaded \(fileURI) to \(downloadsDirectory)/\(name) (\(outcome.bytes) bytes)")
                    return DownloadedFile(name: name, size: outcome.bytes, sha256: Crypto.hex(hasher.finalize()))
                }
                if errno != EEXIST { throw UpdateError.io("link", downloadsDirectory + "/" + name, errno: errno) }
            }
            throw UpdateError("exists", "too many files named \(base) in the downloads folder")
        }.mapError { $0 as? UpdateError ?? UpdateError("transfer_failed", "\($0)") }
    }

    public func requestPost(fileURI: String, message: String, cert: String?) -> Result<PostReply, UpdateError> {
        Result {
            let trust = try configuration.certificates.trust(for: fileURI, cert: cert)
            let body = Array(message.utf8)
            guard body.count <= configuration.maxPostMessageBytes else {
                throw UpdateError("message_too_long", "the message is \(body.count) bytes; the limit is "
                                  + "\(configuration.maxPostMessageBytes)")
            }
            let first = message.first(where: { !$0.isWhitespace })
            let contentType = first == "{" || first == "[" ? "application/json" : "text/plain; charset=utf-8"
            let cap = configuration.maxPostReplyBytes
            var reply: [UInt8] = []
            var truncated = false
            let outcome = try HTTPTransfer.perform(
                url: fileURI, post: (body, contentType), trust: trust,
                limits: configuration.transferLimits(maxBytes: Int64.max / 2,
                                                     totalTimeout: configuration.postTimeoutSeconds),
                onData: { chunk in
                    let room = cap - reply.count
                    reply += chunk.prefix(room)
                    if chunk.count > room { truncated = true; return false } // stop reading a reply nobody sees
                    return true
                })
            return PostReply(status: outcome.status, body: String(decoding: reply, as: UTF8.self),
                             truncated: truncated)
        }.mapError { $0 as? UpdateError ?? UpdateError("transfer_failed", "\($0)") }
    }

    public func downloadFile(fileURI: String, cert: String?) async -> Result<DownloadedFile, UpdateError> {
        await onOwnThread("meterext-dl") { self.downloadFile(fileURI: fileURI, cert: cert) }
    }

    public func requestPost(fileURI: String, message: String, cert: String?) async -> Result<PostReply, UpdateError> {
        await onOwnThread("meterext-post") { self.requestPost(fileURI: fileURI, message: message, cert: cert) }
    }
}
