#if canImport(Glibc)
import Glibc
#endif
@testable import MeterHTTP
import MeterService
import NIOCore
import NIOHTTP1
import XCTest

/// The read-only `/javascript/` route and the page's own files (issue 15, dashboard): names are checked before the
/// disk is touched, and what the disk resolves to must stay under the root.
final class StaticFilesTests: XCTestCase {
    var dir = ""
    var root = ""
    var outside = ""

    override func setUpWithError() throws {
        var template = Array("/tmp/meterext-static-XXXXXX".utf8CString)
        dir = try XCTUnwrap(template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }.map { String(cString: $0) })
        root = dir + "/javascript"
        outside = dir + "/secret.js"
        mkdir(root, 0o755)
        mkdir(root + "/chart.js", 0o755)
        try write("Chart=1;", to: root + "/chart.js/chart.min.js")
        try write("SECRET", to: outside)
        symlink(root + "/chart.js/chart.min.js", root + "/chart.js/Chart.min.js")  // Debian's own links stay inside
        symlink(outside, root + "/chart.js/escape.js")
        symlink("/etc", root + "/etc")
    }

    override func tearDown() {
        for link in ["/chart.js/Chart.min.js", "/chart.js/escape.js", "/etc", "/chart.js/chart.min.js"] { unlink(root + link) }
        rmdir(root + "/chart.js")
        rmdir(root)
        unlink(outside)
        rmdir(dir)
    }

    private func write(_ text: String, to path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw XCTSkip("cannot write \(path)") }
        _ = text.withCString { Glibc.write(fd, $0, strlen($0)) }
        close(fd)
    }

    private func get(_ path: String, files: StaticFiles? = nil, method: HTTPMethod = .GET,
                     headers: HTTPHeaders = [:]) -> StaticReply? {
        let files = files ?? StaticFiles(javascriptRoot: root)
        return files.reply(path: path, head: HTTPRequestHead(version: .http1_1, method: method, uri: path, headers: headers),
                           cache: StaticFileCache())
    }

    private func text(_ r: StaticReply?) -> String { r.map { String(buffer: $0.body) } ?? "" }

    func testNamesAreCheckedBeforeTheDisk() {
        let files = StaticFiles(javascriptRoot: root)
        XCTAssertEqual(files.resolve(path: "/api"), .notStatic)
        XCTAssertEqual(files.resolve(path: "/javascriptx"), .notStatic)
        XCTAssertEqual(files.resolve(path: "/javascript/chart.js/chart.min.js"), .library(relative: "chart.js/chart.min.js"))
        for bad in ["/javascript/", "/javascript", "/javascript/../etc/passwd", "/javascript/chart.js/../../x.js",
                    "/javascript/chart.js/%2e%2e/x.js", "/javascript//etc/x.js", "/javascript/chart.js/.hidden.js",
                    "/javascript/chart.js/a\\b.js", "/javascript/chart.js/chart.min.js%00.png",
                    "/javascript/chart.js/x.sh", "/javascript/chart.js/noext", "/javascript/a/b/c/d/e/f/g/h/i.js"] {
            guard case .refused = files.resolve(path: bad) else { return XCTFail("\(bad) was not refused") }
        }
        XCTAssertEqual(StaticFiles(javascriptRoot: nil).resolve(path: "/javascript/chart.js/chart.min.js"), .notStatic)
        XCTAssertEqual(files.resolve(path: "/setup.js"), .asset(index: 0))
    }

    func testAFileIsServedWithItsTypeAndCachingAndRevalidates() throws {
        let r = try XCTUnwrap(get("/javascript/chart.js/chart.min.js"))
        XCTAssertEqual(r.status, .ok)
        XCTAssertEqual(r.contentType, "text/javascript; charset=utf-8")
        XCTAssertEqual(text(r), "Chart=1;")
        let etag = try XCTUnwrap(r.headers.first { $0.0 == "etag" }?.1)
        XCTAssertEqual(r.headers.first { $0.0 == "cache-control" }?.1, "public, max-age=86400")
        XCTAssertEqual(get("/javascript/chart.js/chart.min.js", headers: ["If-None-Match": etag])?.status, .notModified)
        XCTAssertEqual(get("/javascript/chart.js/Chart.min.js")?.status, .ok, "a link inside the root is followed")
    }

    func testNothingOutsideTheRootIsServed() {
        for path in ["/javascript/chart.js/escape.js", "/javascript/etc/passwd.js", "/javascript/chart.js"] {
            let r = get(path)
            XCTAssertEqual(r?.status, .notFound, path)
            XCTAssertFalse(text(r).contains("SECRET"), path)
        }
        XCTAssertTrue(text(get("/javascript/chart.js/escape.js")).contains("outside"))
    }

    func testAMissingFileOrPackageIsA404ThatNamesThePackage() {
        let missing = get("/javascript/chart.js/chart.umd.js")
        XCTAssertEqual(missing?.status, .notFound)
        XCTAssertTrue(text(missing).contains("libjs-chart.js"), text(missing))
        XCTAssertTrue(text(missing).contains(#""error":"not_found""#), text(missing))
        let noRoot = get("/javascript/chart.js/chart.min.js", files: StaticFiles(javascriptRoot: root + "/nothing"))
        XCTAssertEqual(noRoot?.status, .notFound)
        XCTAssertTrue(text(noRoot).contains("sudo apt install libjs-chart.js"), text(noRoot))
    }

    func testOnlyGetAndHead() {
        let r = get("/javascript/chart.js/chart.min.js", method: .POST)
        XCTAssertEqual(r?.status, .methodNotAllowed)
        XCTAssertEqual(r?.headers.first { $0.0 == "allow" }?.1, "GET, HEAD")
    }

    func testThePageScriptAndStyleComeFromTheFirmware() throws {
        let js = try XCTUnwrap(get("/setup.js"))
        XCTAssertEqual(js.contentType, "text/javascript; charset=utf-8")
        XCTAssertEqual(text(js), SetupPage.script)
        XCTAssertEqual(get("/setup.css")?.contentType, "text/css; charset=utf-8")
        // The policy allows only same-origin scripts: the page must not carry an inline one.
        XCTAssertFalse(SetupPage.html.contains("<script>"))
        XCTAssertFalse(SetupPage.html.contains("style=\""))
        XCTAssertTrue(SetupPage.contentSecurityPolicy.contains("script-src 'self';"))
    }
}
