import Glibc

/// Whole-file replacement that survives power loss and SIGKILL: readers see the old
/// content or the new content, never a mix.
///
/// Write path: temporary file in the same directory (so `rename` stays on one file
/// system), write everything, `fsync` the file, `rename` over the target, `fsync` the
/// directory so the rename itself is durable.
public enum AtomicFile {
    /// Replaces `path` with `bytes`, creating it with `mode` (0600 by default: the
    /// files hold secrets).
    ///
    /// An existing file keeps its owner, group and mode: `sudo meterext token …` must not turn the
    /// service's files into root's (the service runs as its own user and could no longer read them).
    /// A new file written by root takes the owner of its directory for the same reason.
    public static func write(_ bytes: [UInt8], to path: String, mode: mode_t = 0o600) throws {
        let dir = directory(of: path)
        let owner = ownership(replacing: path, in: dir, defaultMode: mode)
        let base = path.split(separator: "/").last.map(String.init) ?? path
        var template = Array("\(dir)/.\(base).tmp-XXXXXX".utf8CString)
        let fd = try template.withUnsafeMutableBufferPointer { buf in
            try sys("mkstemp", path) { mkstemp(buf.baseAddress!) }
        }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC) // Glibc's module has no mkostemp
        let tmpPath = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        var renamed = false
        defer {
            if !renamed { unlink(tmpPath) }
        }
        do {
            defer { close(fd) }
            try sys("fchmod", tmpPath) { fchmod(fd, owner.mode) }
            if let uid = owner.uid, let gid = owner.gid {
                try sys("fchown", tmpPath) { fchown(fd, uid, gid) }
            }
            try writeAll(fd: fd, bytes, path: tmpPath)
            try sys("fsync", tmpPath) { fsync(fd) }
        }
        try sys("rename", path) { rename(tmpPath, path) }
        renamed = true
        try syncDirectory(dir)
    }

    /// Mode (and, for root, owner) the replacement of `path` gets: the existing file's, else `defaultMode` and the
    /// directory's owner. uid/gid are nil when there is nothing to change (not root, or already ours).
    static func ownership(replacing path: String, in dir: String, defaultMode: mode_t)
        -> (mode: mode_t, uid: uid_t?, gid: gid_t?) {
        var st = stat()
        let exists = stat(path, &st) == 0
        let mode = exists ? st.st_mode & 0o7777 : defaultMode
        guard geteuid() == 0 else { return (mode, nil, nil) }
        if !exists {
            guard stat(dir, &st) == 0 else { return (mode, nil, nil) }
        }
        return (mode, st.st_uid, st.st_gid)
    }

    /// The file's content, or nil when it does not exist.
    public static func read(_ path: String) throws -> [UInt8]? {
        try read(prefix: Int.max, of: path)
    }

    /// At most `limit` bytes from the start of the file, nil when it does not exist.
    static func read(prefix limit: Int, of path: String) throws -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd == -1 {
            if errno == ENOENT { return nil }
            throw SystemError("open", path: path)
        }
        defer { close(fd) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        while out.count < limit {
            let n = try chunk.withUnsafeMutableBytes { buf in
                try sys("read", path) { Glibc.read(fd, buf.baseAddress, buf.count) }
            }
            if n == 0 { break }
            out.append(contentsOf: chunk[0..<min(n, limit - out.count)])
        }
        return out
    }

    /// Creates `path` (and parents) with mode 0700 when missing.
    public static func makeDirectory(_ path: String) throws {
        var current = path.hasPrefix("/") ? "" : "."
        for part in path.split(separator: "/") {
            current += "/" + part
            if mkdir(current, 0o700) == -1 && errno != EEXIST {
                throw SystemError("mkdir", path: current)
            }
        }
    }

    /// Deletes temporary files of writes that were interrupted (power cut, SIGKILL)
    /// before their rename; they would otherwise pile up.
    public static func removeLeftovers(in dir: String, of names: [String]) {
        guard let d = opendir(dir) else { return }
        defer { closedir(d) }
        let prefixes = names.map { ".\($0).tmp-" }
        while let entry = readdir(d) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if prefixes.contains(where: { name.hasPrefix($0) }) { unlink("\(dir)/\(name)") }
        }
    }

    static func writeAll(fd: Int32, _ bytes: [UInt8], path: String) throws {
        try bytes.withUnsafeBytes { buf in
            var offset = 0
            while offset < buf.count {
                let n = try sys("write", path) { Glibc.write(fd, buf.baseAddress! + offset, buf.count - offset) }
                offset += n
            }
        }
    }

    static func syncDirectory(_ dir: String) throws {
        let fd = try sys("open", dir) { open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        defer { close(fd) }
        try sys("fsync", dir) { fsync(fd) }
    }

    static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        let dir = String(path[..<slash])
        return dir.isEmpty ? "/" : dir
    }
}
