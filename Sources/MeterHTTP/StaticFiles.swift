#if canImport(Glibc)
import Glibc
#endif
import MeterService
import NIOCore
import NIOHTTP1
import Platform
import Synchronization

/// The page's own script and style (in memory, from the firmware) and a read-only window onto Debian's
/// `/usr/share/javascript` at `/javascript/…` (the chart library from `libjs-chart.js`; the path is the one Debian's
/// `javascript-common` uses for web servers). Nothing else on the file system is reachable through it:
///
/// - only `GET`/`HEAD`; only names made of `A-Z a-z 0-9 . _ - + @` in `/`-separated segments, none empty or starting
///   with `.` (so no `..`, no hidden files, no percent-escapes, no backslashes), at most 8 deep;
/// - only the file types a page loads (`.js`, `.mjs`, `.css`, `.map`, `.json`, `.png`, `.svg`, `.woff2`);
/// - the resolved path (symlinks followed) must still lie under the directory and be a regular file of at most
///   `maxFileBytes`.
///
/// A missing file is a 404 that names the Debian package to install. Files are read once and kept in memory
/// (checked against `stat` on every request, so a package upgrade is picked up); `ETag` and `If-None-Match` let
/// the browser keep its copy.
public struct StaticFiles: Sendable {
    /// One file served from memory (the set-up page's script and style).
    public struct Asset: Sendable {
        public var path: String
        public var contentType: String
        public var body: [UInt8]
        public init(path: String, contentType: String, body: String) {
            self.path = path
            self.contentType = contentType
            self.body = Array(body.utf8)
        }
    }

    public static let urlPrefix = "/javascript/"
    public static let debianJavaScriptRoot = "/usr/share/javascript"
    public static let maxFileBytes = 4 * 1024 * 1024
    /// What the browser may keep a library file without asking again (a package upgrade changes the ETag).
    static let libraryCacheControl = "public, max-age=86400"
    /// The page's own files: revalidated on every load, so a firmware update shows at once (304 when unchanged).
    static let assetCacheControl = "no-cache"

    /// Served at their `path`; the set-up page's script and style by default.
    public var assets: [Asset]
    /// nil: no `/javascript/` route (404 like any unknown path).
    public var javascriptRoot: String?

    public init(assets: [Asset] = StaticFiles.setupPageAssets, javascriptRoot: String? = StaticFiles.debianJavaScriptRoot) {
        self.assets = assets
        self.javascriptRoot = javascriptRoot
    }

    public static let setupPageAssets: [Asset] = SetupPage.files.map {
        Asset(path: $0.path, contentType: $0.contentType, body: $0.body)
    }

    /// The headers every page of the board's own (and the files it loads) carries: scripts and styles only from the
    /// board itself (no inline script, nothing from elsewhere: the page must work on the set-up access point without
    /// internet anyway), API calls only to the board, no framing by other sites.
    public static let pageSecurityHeaders: [(String, String)] = [
        ("content-security-policy", SetupPage.contentSecurityPolicy),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-cache"),
    ]

    // MARK: resolving a request path (pure)

    /// What a request path is, before the file system is asked.
    public enum Resolution: Equatable, Sendable {
        /// Not a static path: the other routes decide.
        case notStatic
        case asset(index: Int)
        /// A well-formed name under the JavaScript root (relative, without a leading `/`).
        case library(relative: String)
        /// Under `/javascript/` but refused before touching the disk; the reason is for the 404's message.
        case refused(String)
    }

    static let allowedTypes: [String: String] = [
        "js": "text/javascript; charset=utf-8", "mjs": "text/javascript; charset=utf-8",
        "css": "text/css; charset=utf-8", "map": "application/json", "json": "application/json",
        "png": "image/png", "svg": "image/svg+xml", "woff2": "font/woff2",
    ]

    /// The path of a request target, without its query.
    static func path(of uri: String) -> String {
        uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? uri
    }

    public func resolve(path: String) -> Resolution {
        if let index = assets.firstIndex(where: { $0.path == path }) { return .asset(index: index) }
        guard javascriptRoot != nil, path.hasPrefix(Self.urlPrefix) || path == "/javascript" else { return .notStatic }
        let relative = path.dropFirst(min(path.count, Self.urlPrefix.count))
        let segments = relative.split(separator: "/", omittingEmptySubsequences: false)
        guard !relative.isEmpty, segments.count <= 8, relative.utf8.count <= 255 else {
            return .refused("only files under /javascript/ are served")
        }
        for segment in segments {
            guard !segment.isEmpty, segment.first != "." else {
                return .refused("path segments that are empty or start with '.' (such as '..') are not served")
            }
            guard segment.utf8.allSatisfy(Self.isNameByte) else {
                return .refused("only letters, digits and . _ - + @ are served in file names (no escapes)")
            }
        }
        guard Self.contentType(of: String(relative)) != nil else {
            return .refused("only script, style, source-map, JSON, PNG, SVG and WOFF2 files are served")
        }
        return .library(relative: String(relative))
    }

    static func isNameByte(_ b: UInt8) -> Bool {
        switch b {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
             UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"), UInt8(ascii: "+"), UInt8(ascii: "@"):
            return true
        default:
            return false
        }
    }

    static func contentType(of name: String) -> String? {
        guard let dot = name.lastIndex(of: "."), !name[dot...].contains("/") else { return nil }
        return allowedTypes[String(name[name.index(after: dot)...]).lowercased()]
    }

    /// The Debian package that puts `relative` under /usr/share/javascript, for the 404's hint.
    static func packageHint(for relative: String) -> String {
        let top = relative.split(separator: "/").first.map(String.init) ?? ""
        if top == "chart.js" { return "libjs-chart.js" }
        return "the Debian package that provides /usr/share/javascript/\(top) (dpkg -S, apt-file search)"
    }
}

/// A reply the handler writes as it is.
struct StaticReply: Sendable {
    var status: HTTPResponseStatus
    var headers: [(String, String)]
    /// JSON error body, or the file.
    var body: ByteBuffer
    var contentType: String
}

/// Files read from the JavaScript root (on the handler's staticFileQueue, never on an event loop), kept while their
/// `stat` identity does not change. Bounded: at most
/// `maxBytes` in all (beyond that the cache is emptied and filled again).
final class StaticFileCache: Sendable {
    struct Identity: Equatable {
        var device: UInt64, inode: UInt64, size: Int, modified: Int64, modifiedNanos: Int
        var etag: String { "\"\(String(inode, radix: 16))-\(String(size, radix: 16))-\(String(modified, radix: 16))\(String(modifiedNanos, radix: 16))\"" }
    }
    private struct Entry { var identity: Identity; var body: ByteBuffer }
    private let entries = Mutex<[String: Entry]>([:])
    let maxBytes: Int

    init(maxBytes: Int = 8 * 1024 * 1024) { self.maxBytes = maxBytes }

    enum Lookup {
        case file(ByteBuffer, Identity)
        case missing(rootExists: Bool)
        case refused(String)
    }

    /// Blocking but short: one `realpath`, one `stat`, and on the first request for a file one read of at most
    /// `StaticFiles.maxFileBytes` from a local read-only file system.
    func lookup(root: String, relative: String) -> Lookup {
        guard let realRoot = Self.realPath(root) else { return .missing(rootExists: false) }
        guard let real = Self.realPath(root + "/" + relative) else { return .missing(rootExists: true) }
        guard real.hasPrefix(realRoot + "/") else { return .refused("the name leads outside /javascript/") }
        var st = stat()
        guard stat(real, &st) == 0 else { return .missing(rootExists: true) }
        guard st.st_mode & S_IFMT == S_IFREG else { return .refused("only files are served, not directories") }
        guard Int(st.st_size) <= StaticFiles.maxFileBytes else { return .refused("the file is too large to serve") }
        let identity = Identity(device: UInt64(st.st_dev), inode: UInt64(st.st_ino), size: Int(st.st_size),
                                modified: Int64(st.st_mtim.tv_sec), modifiedNanos: Int(st.st_mtim.tv_nsec))
        if let hit = entries.withLock({ $0[real] }), hit.identity == identity { return .file(hit.body, identity) }
        guard let bytes = try? readSmallFile(real, limit: StaticFiles.maxFileBytes), bytes.count == identity.size else {
            return .missing(rootExists: true)
        }
        let body = ByteBuffer(bytes: bytes)
        entries.withLock { cache in
            if cache.values.reduce(bytes.count, { $0 + $1.body.readableBytes }) > maxBytes { cache.removeAll() }
            cache[real] = Entry(identity: identity, body: body)
        }
        return .file(body, identity)
    }

    static func realPath(_ path: String) -> String? {
        guard let p = realpath(path, nil) else { return nil }
        defer { free(p) }
        return String(cString: p)
    }
}

extension StaticFiles {
    /// The whole answer to a static path; `nil` when `path` is not one (the other routes decide).
    func reply(path: String, head: HTTPRequestHead, cache: StaticFileCache) -> StaticReply? {
        let resolution = resolve(path: path)
        if resolution == .notStatic { return nil }
        guard head.method == .GET || head.method == .HEAD else {
            return Self.error(.methodNotAllowed, .methodNotAllowed,
                              "method \(head.method.rawValue) is not allowed here; use GET, HEAD", extra: [("allow", "GET, HEAD")])
        }
        switch resolution {
        case .notStatic:
            return nil
        case .asset(let index):
            let asset = assets[index]
            let etag = "\"\(String(Self.fnv1a(asset.body), radix: 16))\""
            return Self.file(ByteBuffer(bytes: asset.body), contentType: asset.contentType, etag: etag,
                             cacheControl: Self.assetCacheControl, head: head)
        case .refused(let reason):
            return Self.error(.notFound, .notFound, "not served: \(reason)")
        case .library(let relative):
            switch cache.lookup(root: javascriptRoot ?? Self.debianJavaScriptRoot, relative: relative) {
            case .file(let body, let identity):
                return Self.file(body, contentType: Self.contentType(of: relative) ?? "application/octet-stream",
                                 etag: identity.etag, cacheControl: Self.libraryCacheControl, head: head)
            case .missing(let rootExists):
                let package = Self.packageHint(for: relative)
                let what = rootExists ? "no such file" : "no JavaScript libraries are installed"
                return Self.error(.notFound, .notFound,
                                  "\(what): /javascript/\(relative); the dashboard's charts need the Debian package "
                                  + "\(package) (sudo apt install \(package)); live values work without it")
            case .refused(let reason):
                return Self.error(.notFound, .notFound, "not served: \(reason)")
            }
        }
    }

    private static func file(_ body: ByteBuffer, contentType: String, etag: String, cacheControl: String,
                             head: HTTPRequestHead) -> StaticReply {
        let headers: [(String, String)] = [("etag", etag), ("cache-control", cacheControl),
                                           ("x-content-type-options", "nosniff")]
        let tags = head.headers[canonicalForm: "if-none-match"].map { $0.trimmingSpaces() }
        if tags.contains(etag) || tags.contains("*") {
            return StaticReply(status: .notModified, headers: headers, body: ByteBuffer(), contentType: contentType)
        }
        return StaticReply(status: .ok, headers: headers, body: body, contentType: contentType)
    }

    private static func error(_ status: HTTPResponseStatus, _ code: APIErrorCode, _ message: String,
                              extra: [(String, String)] = []) -> StaticReply {
        StaticReply(status: status, headers: [("x-content-type-options", "nosniff")] + extra,
                    body: ByteBuffer(bytes: ReplyEncoder.errorBody(code: code, message: message)),
                    contentType: "application/json")
    }

    /// A content hash for the in-memory assets' ETag (they change only with the firmware).
    static func fnv1a(_ bytes: [UInt8]) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return h
    }
}

extension Substring {
    fileprivate func trimmingSpaces() -> String {
        String(drop(while: { $0 == " " }).reversed().drop(while: { $0 == " " }).reversed())
    }
}
