import Glibc

/// Whole-file replacement that survives power loss and SIGKILL, and small-file reads: the one implementation
/// every module uses (state files, update slots, signing keys, board profiles, /proc and /sys).
///
/// Write path: temporary file in the same directory (so `rename` stays on one file system), write everything,
/// `fsync` the file, `rename` over the target, `fsync` the directory so the rename itself is durable. Readers see
/// the old content or the new content, never a mix.
public enum AtomicFile {
    /// Replaces `path` with `bytes`.
    ///
    /// A new file gets `mode` (0600 by default: most of these files hold secrets). A file that already exists keeps
    /// its owner, group and mode: `sudo meterext token …` must not leave a root-owned 0600 file the service (its
    /// own user) can no longer read. When the caller may not give the file away (an unprivileged writer replacing
    /// someone else's file), the new file belongs to the writer, as any rename-over would.
    public static func write(_ bytes: [UInt8], to path: String, mode: mode_t = 0o600) throws(SystemError) {
        let dir = directory(of: path)
        var existing = stat()
        let replacing = stat(path, &existing) == 0 && (existing.st_mode & S_IFMT) == S_IFREG
        var template = Array("\(dir)/.\(baseName(of: path)).tmp-XXXXXX".utf8CString)
        let fd = try template.withUnsafeMutableBufferPointer { (buf) throws(SystemError) -> Int32 in
            try retryingInterrupts("mkstemp", path: path) { mkstemp(buf.baseAddress!) }
        }
        try? Descriptor.setCloseOnExec(fd)
        let tmpPath = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        var renamed = false
        defer { if !renamed { unlink(tmpPath) } }
        do {
            defer { Descriptor.close(fd) }
            if replacing {
                if existing.st_uid != geteuid() || existing.st_gid != getegid() {
                    // EPERM: not ours to give away (see above); anything else is a real failure.
                    do {
                        _ = try retryingInterrupts("fchown", path: tmpPath) {
                            fchown(fd, existing.st_uid, existing.st_gid)
                        }
                    } catch where error.errno == EPERM {}
                }
                _ = try retryingInterrupts("fchmod", path: tmpPath) { fchmod(fd, existing.st_mode & 0o7777) }
            } else {
                _ = try retryingInterrupts("fchmod", path: tmpPath) { fchmod(fd, mode) }
            }
            try Descriptor.writeAll(fd, bytes, path: tmpPath)
            _ = try retryingInterrupts("fsync", path: tmpPath) { fsync(fd) }
        }
        _ = try retryingInterrupts("rename", path: path) { rename(tmpPath, path) }
        renamed = true
        try syncDirectory(dir)
    }

    /// The file's content, or nil when it does not exist.
    public static func read(_ path: String) throws(SystemError) -> [UInt8]? {
        try read(prefix: Int.max, of: path)
    }

    /// At most `limit` bytes from the start of the file, nil when it does not exist.
    public static func read(prefix limit: Int, of path: String) throws(SystemError) -> [UInt8]? {
        do {
            return try readSmallFile(path, limit: limit)
        } catch where error.errno == ENOENT {
            return nil
        }
    }

    /// Creates `path` (and parents) with `mode` (0700 by default) when missing.
    public static func makeDirectory(_ path: String, mode: mode_t = 0o700) throws(SystemError) {
        var current = path.hasPrefix("/") ? "" : "."
        for part in path.split(separator: "/") {
            current += "/" + part
            if mkdir(current, mode) == -1 && errno != EEXIST {
                throw SystemError("mkdir", path: current)
            }
        }
    }

    /// Deletes temporary files of writes that were interrupted (power cut, SIGKILL) before their rename; they would
    /// otherwise pile up.
    public static func removeLeftovers(in dir: String, of names: [String]) {
        let prefixes = names.map { ".\($0).tmp-" }
        for name in (try? listDirectory(dir)) ?? [] where prefixes.contains(where: { name.hasPrefix($0) }) {
            unlink("\(dir)/\(name)")
        }
    }

    /// fsync on a directory: makes a rename (or a new entry) in it durable.
    public static func syncDirectory(_ dir: String) throws(SystemError) {
        let fd = try Descriptor.open(dir, flags: O_RDONLY | O_DIRECTORY)
        defer { Descriptor.close(fd) }
        _ = try retryingInterrupts("fsync", path: dir) { fsync(fd) }
    }

    /// `/a/b` for `/a/b/c`, `/` for `/c`, `.` for `c`.
    public static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        let dir = String(path[..<slash])
        return dir.isEmpty ? "/" : dir
    }

    /// `c` for `/a/b/c`.
    public static func baseName(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return path }
        return String(path[path.index(after: slash)...])
    }
}

/// Reads a whole small file (state, profiles, keys, /proc and /sys entries): at most `limit` bytes from its start.
/// The error names the operation, the path and the errno.
public func readSmallFile(_ path: String, limit: Int = 1 << 20) throws(SystemError) -> [UInt8] {
    let fd = try Descriptor.open(path, flags: O_RDONLY)
    defer { Descriptor.close(fd) }
    var out: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while out.count < limit {
        var read: Result<Int, SystemError> = .success(0)
        chunk.withUnsafeMutableBytes { buf in
            read = Result { () throws(SystemError) in try Descriptor.read(fd, filling: buf, deadline: nil, path: path) }
        }
        let n = try read.get()
        out.append(contentsOf: chunk[0..<min(n, limit - out.count)])
        if n < chunk.count { break }
    }
    return out
}

/// The names in a directory, without `.` and `..`, sorted.
public func listDirectory(_ path: String) throws(SystemError) -> [String] {
    guard let dir = opendir(path) else { throw SystemError("opendir", path: path) }
    defer { closedir(dir) }
    var names: [String] = []
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
            String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
        if name != "." && name != ".." { names.append(name) }
    }
    return names.sorted()
}
