import Glibc
import Platform

/// The file-system operations the update code needs, on Platform's wrappers (EINTR retried once, there), throwing
/// `UpdateError` with the operation, path and errno text. Everything that must survive a power cut goes through
/// `atomicWrite` (Platform's `AtomicFile`: temp file, fsync, rename, directory fsync) or `atomicSymlink` (fresh
/// link, rename over the old one).
enum FileIO {
    /// Runs a Platform call; its `SystemError` becomes the `io_error` reply.
    static func io<T>(_ body: () throws(SystemError) -> T) throws(UpdateError) -> T {
        do { return try body() } catch { throw UpdateError.io(error.operation, error.path ?? "", errno: error.errno) }
    }

    static func exists(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0
    }

    static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    static func isRegularFile(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG
    }

    static func fileSize(_ path: String) -> Int64? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return Int64(st.st_size)
    }

    /// Run as root (`sudo meterext image install`, `meterext net download`), a new file or directory takes the owner
    /// of the directory it is created in, so the service, which runs as its own user and owns its state directory,
    /// can still replace and remove it. No-op for other users.
    static func adoptParentOwner(_ path: String, descriptor: Int32? = nil) {
        guard geteuid() == 0 else { return }
        var parent = stat()
        guard stat(directoryOf(path), &parent) == 0 else { return }
        if let descriptor {
            _ = fchown(descriptor, parent.st_uid, parent.st_gid)
        } else {
            _ = lchown(path, parent.st_uid, parent.st_gid)
        }
    }

    static func makeDirectories(_ path: String, mode: mode_t = 0o755) throws {
        var built = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            built += "/" + component
            if mkdir(built, mode) == 0 { adoptParentOwner(built); continue }
            if errno != EEXIST { throw UpdateError.io("mkdir", built, errno: errno) }
        }
        guard isDirectory(path) else { throw UpdateError.io("mkdir", path, errno: ENOTDIR) }
    }

    static func openFile(_ path: String, _ flags: Int32, mode: mode_t = 0o644) throws -> Int32 {
        let creating = flags & O_CREAT != 0 && !exists(path)
        let fd = try io { () throws(SystemError) in try Descriptor.open(path, flags: flags, mode: mode) }
        if creating { adoptParentOwner(path, descriptor: fd) }
        return fd
    }

    static func writeAll(_ fd: Int32, _ buffer: UnsafeRawBufferPointer, path: String) throws {
        _ = try io { () throws(SystemError) in try Descriptor.writeAll(fd, buffer, path: path) }
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8], path: String) throws {
        _ = try io { () throws(SystemError) in try Descriptor.writeAll(fd, bytes, path: path) }
    }

    /// Reads up to `count` bytes at the current position; fewer only at end of file.
    static func readUpTo(_ fd: Int32, _ count: Int, path: String) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        var got: Result<Int, SystemError> = .success(0)
        out.withUnsafeMutableBytes { buffer in
            got = Result { () throws(SystemError) in try Descriptor.read(fd, filling: buffer, deadline: nil, path: path) }
        }
        out.removeSubrange((try io { () throws(SystemError) in try got.get() })...)
        return out
    }

    static func readFile(_ path: String, limit: Int = 1 << 20) throws -> [UInt8] {
        try io { () throws(SystemError) in try readSmallFile(path, limit: limit) }
    }

    static func fsyncFile(_ fd: Int32, path: String) throws {
        _ = try io { () throws(SystemError) in try retryingInterrupts("fsync", path: path) { fsync(fd) } }
    }

    static func fsyncDirectory(_ path: String) throws {
        try io { () throws(SystemError) in try AtomicFile.syncDirectory(path) }
    }

    static func directoryOf(_ path: String) -> String { AtomicFile.directory(of: path) }

    static func baseName(_ path: String) -> String { AtomicFile.baseName(of: path) }

    static func tempName(for path: String) -> String {
        "\(directoryOf(path))/.\(baseName(path)).tmp-\(getpid())-\(UInt32.random(in: 0 ... .max))"
    }

    static func rename(_ from: String, _ to: String) throws {
        if Glibc.rename(from, to) != 0 { throw UpdateError.io("rename \(from) to", to, errno: errno) }
    }

    /// Writes `bytes` so that after a crash at any moment `path` holds either the old or the new contents; a new
    /// file gets `mode`, a replaced one keeps its owner and mode.
    static func atomicWrite(_ path: String, _ bytes: [UInt8], mode: mode_t = 0o644) throws {
        let creating = !exists(path)
        try io { () throws(SystemError) in try AtomicFile.write(bytes, to: path, mode: mode) }
        if creating { adoptParentOwner(path) }
    }

    /// Points the symlink `linkPath` at `target` in one step: a fresh link renamed over the old one.
    static func atomicSymlink(target: String, at linkPath: String) throws {
        let temp = tempName(for: linkPath)
        if symlink(target, temp) != 0 { throw UpdateError.io("symlink", temp, errno: errno) }
        adoptParentOwner(temp)
        do { try rename(temp, linkPath) } catch { unlink(temp); throw error }
        try fsyncDirectory(directoryOf(linkPath))
    }

    static func readLink(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink(path, &buffer, buffer.count - 1)
        guard n > 0 else { return nil }
        return String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func removeIfPresent(_ path: String) throws {
        if unlink(path) != 0 && errno != ENOENT { throw UpdateError.io("unlink", path, errno: errno) }
    }

    static func listDirectory(_ path: String) -> [String] {
        (try? Platform.listDirectory(path)) ?? []
    }

    /// Removes a directory tree (slot directories hold a binary and a small JSON file; no symlinks are followed).
    static func removeTree(_ path: String) {
        var st = stat()
        guard lstat(path, &st) == 0 else { return }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            for name in listDirectory(path) { removeTree(path + "/" + name) }
            rmdir(path)
        } else {
            unlink(path)
        }
    }

    static func environment(_ name: String) -> String? {
        guard let value = getenv(name) else { return nil }
        return String(cString: value)
    }
}

/// Runs `body` on its own named thread (Platform's `OSThread`): downloads block in libcurl for minutes and must
/// not sit on Swift's cooperative thread pool (two threads on a two-core board). A thread that cannot be started is
/// an `io_error` reply, never a run on the caller's thread.
func onOwnThread<T: Sendable>(_ name: String, _ body: @escaping @Sendable () -> Result<T, UpdateError>) async
    -> Result<T, UpdateError>
{
    do { return try await OSThread.run(name: name, body) } catch {
        return .failure(UpdateError("io_error", "\(error)"))
    }
}
