import Glibc
import Platform
import Synchronization
import XCTest

final class RetryTests: XCTestCase {
    /// A recorder in place of the syscall: EINTR twice, then success. The helper must retry, not throw.
    func testEINTRIsRetried() throws {
        var calls = 0
        let result = try retryingInterrupts("recorded") { () -> Int32 in
            calls += 1
            if calls < 3 { errno = EINTR; return -1 }
            return 42
        }
        XCTAssertEqual(result, 42)
        XCTAssertEqual(calls, 3)
    }

    func testOtherErrorsThrowWithOperationAndPath() {
        XCTAssertThrowsError(try retryingInterrupts("open", path: "/x") { () -> Int32 in errno = ENOENT; return -1 }) {
            let error = $0 as? SystemError
            XCTAssertEqual(error, SystemError(operation: "open", errno: ENOENT, path: "/x"))
            XCTAssertEqual(error?.description, "open /x: No such file or directory (errno 2)")
        }
    }

    func testEAGAINIsNilForNonBlockingCalls() throws {
        var calls = 0
        let result = try retryingInterruptsOrAgain("read") { () -> Int in
            calls += 1
            errno = calls == 1 ? EINTR : EAGAIN
            return -1
        }
        XCTAssertNil(result)
        XCTAssertEqual(calls, 2)
    }

    /// A real signal interrupting a blocking read: with SA_RESTART off the kernel returns EINTR, which the
    /// descriptor read must swallow and keep waiting until the data arrives.
    func testRealSignalDuringABlockingReadIsRetried() throws {
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { _ in }
        action.sa_flags = 0  // no SA_RESTART: the read really sees EINTR
        var old = sigaction()
        sigaction(SIGUSR1, &action, &old)
        defer { sigaction(SIGUSR1, &old, nil) }

        let pipe = try Descriptor.pipe()
        defer { Descriptor.close(pipe.read); Descriptor.close(pipe.write) }
        let readerReady = Atomic<Bool>(false)
        let readerThread = Atomic<UInt>(0)
        let got = Mutex<[UInt8]>([])
        let reader = try OSThread(name: "test-reader") {
            readerThread.store(UInt(bitPattern: Int(bitPattern: UnsafeRawPointer(bitPattern: UInt(pthread_self())))), ordering: .releasing)
            readerReady.store(true, ordering: .releasing)
            var buffer = [UInt8](repeating: 0, count: 3)
            let n = buffer.withUnsafeMutableBytes { try? Descriptor.read(pipe.read, filling: $0, deadline: nil) }
            got.withLock { $0 = Array(buffer.prefix(n ?? 0)) }
        }
        while !readerReady.load(ordering: .acquiring) { MonotonicClock.sleep(nanos: 1_000_000) }
        MonotonicClock.sleep(nanos: 20_000_000)  // let it block in read()
        let tid = pthread_t(readerThread.load(ordering: .acquiring))
        for _ in 0..<3 {
            XCTAssertEqual(pthread_kill(tid, SIGUSR1), 0)
            MonotonicClock.sleep(nanos: 5_000_000)
        }
        XCTAssertEqual(try Descriptor.writeAll(pipe.write, [1, 2, 3]), 3)
        reader.join()
        XCTAssertEqual(got.withLock { $0 }, [1, 2, 3])
    }
}

final class DescriptorTests: XCTestCase {
    func testDeadlineReadOnAPipeReturnsWhatArrived() throws {
        let pipe = try Descriptor.pipe()
        defer { Descriptor.close(pipe.read); Descriptor.close(pipe.write) }
        try Descriptor.writeAll(pipe.write, [7, 8])
        var buffer = [UInt8](repeating: 0, count: 10)
        let deadline = MonotonicClock.nowNanos() + 20_000_000
        let n = try buffer.withUnsafeMutableBytes { try Descriptor.read(pipe.read, filling: $0, deadline: deadline) }
        // The writer never sends more: the read ends at the deadline with the two bytes, not blocked forever.
        XCTAssertEqual(n, 2)
        XCTAssertEqual(Array(buffer.prefix(2)), [7, 8])
        XCTAssertGreaterThanOrEqual(MonotonicClock.nowNanos(), deadline)
    }

    func testPollWithPassedDeadlineReportsTimeout() throws {
        let pipe = try Descriptor.pipe(nonBlocking: true)
        defer { Descriptor.close(pipe.read); Descriptor.close(pipe.write) }
        XCTAssertEqual(try Descriptor.poll(pipe.read, events: Int16(POLLIN), deadline: MonotonicClock.nowNanos()), 0)
        var byte: UInt8 = 0
        XCTAssertNil(try withUnsafeMutableBytes(of: &byte) { try Descriptor.read(pipe.read, into: $0) })
    }

    func testPipeEndsAreCloseOnExec() throws {
        let pipe = try Descriptor.pipe()
        defer { Descriptor.close(pipe.read); Descriptor.close(pipe.write) }
        for fd in [pipe.read, pipe.write] { XCTAssertNotEqual(fcntl(fd, F_GETFD) & FD_CLOEXEC, 0) }
    }
}

final class FileTests: XCTestCase {
    var dir = ""

    override func setUpWithError() throws {
        var template = Array("/tmp/platform-tests-XXXXXX".utf8CString)
        dir = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
    }

    override func tearDown() {
        for name in (try? listDirectory(dir)) ?? [] { unlink("\(dir)/\(name)") }
        rmdir(dir)
    }

    func testWriteThenReadRoundTrips() throws {
        let path = "\(dir)/a.json"
        XCTAssertNil(try AtomicFile.read(path))
        try AtomicFile.write(Array("hello".utf8), to: path)
        XCTAssertEqual(try AtomicFile.read(path), Array("hello".utf8))
        XCTAssertEqual(try readSmallFile(path, limit: 2), Array("he".utf8))
        var st = stat()
        XCTAssertEqual(stat(path, &st), 0)
        XCTAssertEqual(st.st_mode & 0o7777, 0o600, "a new file gets the asked-for mode")
        XCTAssertEqual(try listDirectory(dir), ["a.json"], "no temporary file left behind")
    }

    func testReplacingKeepsModeAndOwner() throws {
        let path = "\(dir)/config.json"
        try AtomicFile.write(Array("old".utf8), to: path, mode: 0o640)
        XCTAssertEqual(chmod(path, 0o644), 0)
        var owner: (uid_t, gid_t) = (getuid(), getgid())
        if geteuid() == 0 {
            // As root (the CLI under sudo): hand the file to another user first, as the service's files are.
            owner = (65534, 65534)
            XCTAssertEqual(chown(path, owner.0, owner.1), 0)
        }
        try AtomicFile.write(Array("new".utf8), to: path, mode: 0o600)
        var st = stat()
        XCTAssertEqual(stat(path, &st), 0)
        XCTAssertEqual(st.st_mode & 0o7777, 0o644, "the replaced file's mode is kept")
        XCTAssertEqual(st.st_uid, owner.0, "the replaced file's owner is kept")
        XCTAssertEqual(st.st_gid, owner.1, "the replaced file's group is kept")
        XCTAssertEqual(try AtomicFile.read(path), Array("new".utf8))
    }

    func testMissingFileIsAnErrnoError() {
        XCTAssertThrowsError(try readSmallFile("\(dir)/missing")) {
            XCTAssertEqual(($0 as? SystemError)?.errno, ENOENT)
            XCTAssertEqual(($0 as? SystemError)?.path, "\(dir)/missing")
        }
    }

    func testProcFilesReadToTheirEnd() throws {
        // /proc reports size 0; the reader must not trust it.
        let text = String(decoding: try readSmallFile("/proc/self/status"), as: UTF8.self)
        XCTAssertTrue(text.hasPrefix("Name:"), text)
        XCTAssertTrue(text.contains("VmRSS") || text.contains("Threads"), text)
    }
}

final class ThreadTests: XCTestCase {
    /// The name reaches the kernel: /proc/self/task/*/comm lists it while the thread runs (what `top -H` shows).
    func testThreadNameIsVisibleToTheKernel() throws {
        let release = Atomic<Bool>(false)
        let started = Atomic<Bool>(false)
        let thread = try OSThread(name: "meterext-poll") {
            started.store(true, ordering: .releasing)
            while !release.load(ordering: .acquiring) { MonotonicClock.sleep(nanos: 1_000_000) }
        }
        while !started.load(ordering: .acquiring) { MonotonicClock.sleep(nanos: 1_000_000) }
        let names = try listDirectory("/proc/self/task").map { task in
            String(decoding: try readSmallFile("/proc/self/task/\(task)/comm"), as: UTF8.self)
        }
        release.store(true, ordering: .releasing)
        thread.join()
        XCTAssertTrue(names.contains("meterext-poll\n"), "\(names)")
    }

    func testLongNamesAreCutNotRefused() throws {
        let seen = Mutex<String>("")
        let thread = try OSThread(name: "meterext-a-very-long-thread-name") {
            let comm = (try? readSmallFile("/proc/thread-self/comm")) ?? []
            seen.withLock { $0 = String(decoding: comm, as: UTF8.self) }
        }
        thread.join()
        XCTAssertEqual(seen.withLock { $0 }, "meterext-a-very\n")
    }

    func testRunReturnsTheResultFromAnotherThread() async throws {
        let caller = pthread_self()
        let (value, other) = try await OSThread.run(name: "test-run") { (21 * 2, pthread_equal(pthread_self(), caller) == 0) }
        XCTAssertEqual(value, 42)
        XCTAssertTrue(other, "the body ran on its own thread")
    }
}

final class ClockTests: XCTestCase {
    func testClockNeverGoesBackwards() {
        var last = MonotonicClock.nowNanos()
        for _ in 0..<10_000 {
            let now = MonotonicClock.nowNanos()
            XCTAssertGreaterThanOrEqual(now, last)
            last = now
        }
    }

    func testDurationAndNanosReadTheSameClock() {
        let a = MonotonicClock.nowNanos()
        let d = systemMonotonicNow()
        let b = MonotonicClock.nowNanos()
        let nanos = UInt64(d.components.seconds) * 1_000_000_000 + UInt64(d.components.attoseconds / 1_000_000_000)
        XCTAssertGreaterThanOrEqual(nanos, a)
        XCTAssertLessThanOrEqual(nanos, b)
    }

    func testSleepUntilReachesTheDeadline() {
        let deadline = MonotonicClock.nowNanos() + 2_000_000
        MonotonicClock.sleep(untilNanos: deadline)
        XCTAssertGreaterThanOrEqual(MonotonicClock.nowNanos(), deadline)
    }
}

final class ListenAddressTests: XCTestCase {
    func testForms() throws {
        XCTAssertEqual(try ListenAddress(parsing: "0.0.0.0:80"), ListenAddress(host: "0.0.0.0", port: 80))
        XCTAssertEqual(try ListenAddress(parsing: "[::1]:8080"), ListenAddress(host: "::1", port: 8080))
        XCTAssertEqual(try ListenAddress(parsing: "[::]:80").description, "[::]:80")
        XCTAssertThrowsError(try ListenAddress(parsing: "localhost"))
        XCTAssertThrowsError(try ListenAddress(parsing: "::1:80"), "IPv6 needs brackets")
        XCTAssertThrowsError(try ListenAddress(parsing: "host:0"))
        XCTAssertEqual(try ListenAddress(parsing: "127.0.0.1:0", allowingAnyPort: true).port, 0)
        XCTAssertThrowsError(try ListenAddress(parsing: "0.0.0.0:99999", allowingAnyPort: true))
    }
}
