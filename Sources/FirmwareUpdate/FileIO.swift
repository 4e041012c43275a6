import Glibc

/// The file-system operations the update code needs, each wrapped once, retrying EINTR and throwing `UpdateError`
/// with the operation, path and errno text. Everything that must survive a power cut goes through `atomicWrite`
/// (temp file, fsync, rename, directory fsync) or `atomicSymlink` (fresh link, rename over the old one).
enum FileIO {
    static func retrying(_ body: () -> Int32) -> Int32 {
        while true {
            let rc = body()
            if rc == -1 && errno == EINTR { continue }
            return rc
        }
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
        let fd = retrying { open(path, flags | O_CLOEXEC, mode) }
        if fd < 0 { throw UpdateError.io("open", path, errno: errno) }
        if creating { adoptParentOwner(path, descriptor: fd) }
        return fd
    }

    static func writeAll(_ fd: Int32, _ buffer: UnsafeRawBufferPointer, path: String) throws {
        var offset = 0
        while offset < buffer.count {
            let n = write(fd, buffer.baseAddress! + offset, buffer.count - offset)
            if n < 0 {
                if errno == EINTR { continue }
                throw UpdateError.io("write", path, errno: errno)
            }
            offset += n
        }
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8], path: String) throws {
        try bytes.withUnsafeBytes { try writeAll(fd, $0, path: path) }
    }

    /// Reads up to `count` bytes at the current position; fewer only at end of file.
    static func readUpTo(_ fd: Int32, _ count: Int, path: String) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        var got = 0
        while got < count {
            let n = out.withUnsafeMutableBytes { read(fd, $0.baseAddress! + got, count - got) }
            if n < 0 {
                if errno == EINTR { continue }
                throw UpdateError.io("read", path, errno: errno)
            }
            if n == 0 { break }
            got += n
        }
        out.removeSubrange(got...)
        return out
    }

    static func readFile(_ path: String, limit: Int = 1 << 20) throws -> [UInt8] {
        let fd = try openFile(path, O_RDONLY)
        defer { close(fd) }
        return try readUpTo(fd, limit, path: path)
    }

    static func fsyncFile(_ fd: Int32, path: String) throws {
        if retrying({ fsync(fd) }) != 0 { throw UpdateError.io("fsync", path, errno: errno) }
    }

    static func fsyncDirectory(_ path: String) throws {
        let fd = try openFile(path, O_RDONLY | O_DIRECTORY)
        defer { close(fd) }
        try fsyncFile(fd, path: path)
    }

    static func directoryOf(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    static func baseName(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return path }
        return String(path[path.index(after: slash)...])
    }

    static func tempName(for path: String) -> String {
        "\(directoryOf(path))/.\(baseName(path)).tmp-\(getpid())-\(UInt32.random(in: 0 ... .max))"
    }

    static func rename(_ from: String, _ to: String) throws {
        if Glibc.rename(from, to) != 0 { throw UpdateError.io("rename \(from) to", to, errno: errno) }
    }

    /// Writes `bytes` so that after a crash at any moment `path` holds either the old or the new contents.
    static func atomicWrite(_ path: String, _ bytes: [UInt8], mode: mode_t = 0o644) throws {
        let temp = tempName(for: path)
        let fd = try openFile(temp, O_WRONLY | O_CREAT | O_EXCL, mode: mode)
        var existing = stat()
        if stat(path, &existing) == 0 {
            // Replacing a file keeps its owner and mode.
            _ = fchmod(fd, existing.st_mode & 0o7777)
            if geteuid() == 0 { _ = fchown(fd, existing.st_uid, existing.st_gid) }
        }
        do {
            try writeAll(fd, bytes, path: temp)
            try fsyncFile(fd, path: temp)
            close(fd)
            try rename(temp, path)
        } catch {
            close(fd)
            unlink(temp)
            throw error
        }
        try fsyncDirectory(directoryOf(path))
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
        guard let dir = opendir(path) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
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

/// Runs `body` on its own detached POSIX thread: downloads block in libcurl for minutes and must not sit on
/// Swift's cooperative thread pool (two threads on a two-core board).
enum BackgroundThread {
    private final class Box {
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }

    static func start(_ body: @escaping @Sendable () -> Void) {
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { raw in
            Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue().body()
            return nil
        }, box)
        if rc != 0 {
            Unmanaged<Box>.fromOpaque(box).takeRetainedValue().body()
        } else {
            pthread_detach(thread)
        }
    }

    static func run<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            start { continuation.resume(returning: body()) }
        }
    }
}
