import Platform
import FoundationEssentials
import Glibc
import Synchronization

/// The device's configuration and state files under one directory (`--state-dir`).
///
/// Every change is written with `AtomicFile` before the call returns, so a power cut or
/// SIGKILL leaves either the old or the new file. A file that still fails to load (disk
/// damage, hand edits) is set aside as `<name>.corrupt-<unix time>` and the store starts
/// from defaults; `loadWarnings` says what happened so the service can log it.
///
/// Thread-safe: reads and updates are serialised by a mutex; writes happen under it.
public final class StateStore: Sendable {
    public static let configFileName = "config.json"
    public static let stateFileName = "state.json"

    public let directory: String
    public var configPath: String { "\(directory)/\(Self.configFileName)" }
    public var statePath: String { "\(directory)/\(Self.stateFileName)" }
    /// Plain-language notes from loading (corrupt file set aside, token generated). Never
    /// contain secrets.
    public let loadWarnings: [String]

    private let contents: Mutex<(config: DeviceConfig, state: DeviceRuntimeState)>

    /// Loads both files (missing = defaults) and writes them back, so a first start
    /// persists its freshly generated API token.
    public init(directory: String) throws {
        self.directory = directory
        try AtomicFile.makeDirectory(directory)
        var warnings: [String] = []
        AtomicFile.removeLeftovers(in: directory, of: [Self.configFileName, Self.stateFileName])
        let configPath = "\(directory)/\(Self.configFileName)"
        let statePath = "\(directory)/\(Self.stateFileName)"
        let config: DeviceConfig
        if let loaded = Self.load(DeviceConfig.self, from: configPath, warnings: &warnings) {
            config = loaded
        } else {
            config = DeviceConfig(apiToken: try Self.generateToken())
            warnings.append("generated a new API token")
        }
        let state = Self.load(DeviceRuntimeState.self, from: statePath, warnings: &warnings) ?? DeviceRuntimeState()
        loadWarnings = warnings
        contents = Mutex((config, state))
        try Self.persist(config, to: configPath)
        try Self.persist(state, to: statePath)
    }

    public var config: DeviceConfig { contents.withLock { $0.config } }
    public var state: DeviceRuntimeState { contents.withLock { $0.state } }

    /// Changes the configuration and writes it before returning. If the write fails the
    /// in-memory copy is left unchanged and the error is thrown.
    @discardableResult
    public func updateConfig<R>(_ body: (inout DeviceConfig) throws -> R) throws -> R {
        try update(\.config, path: configPath, body)
    }

    @discardableResult
    public func updateState<R>(_ body: (inout DeviceRuntimeState) throws -> R) throws -> R {
        try update(\.state, path: statePath, body)
    }

    /// Changes one file's contents on a copy, writes the copy when it differs, and only then keeps it.
    private func update<T: Codable & Equatable, R>(
        _ key: WritableKeyPath<(config: DeviceConfig, state: DeviceRuntimeState), T>, path: String,
        _ body: (inout T) throws -> R
    ) throws -> R {
        try contents.withLock { c in
            var copy = c[keyPath: key]
            let result = try body(&copy)
            if copy != c[keyPath: key] {
                try Self.persist(copy, to: path)
                c[keyPath: key] = copy
            }
            return result
        }
    }

    /// Forgets WiFi, access-point settings, meter key and runtime state. The API token is
    /// regenerated too: a factory reset is what happens before a board changes hands, and
    /// the previous owner's token must stop working. (The firmware itself is not touched.)
    public func factoryReset() throws {
        let token = try Self.generateToken()
        try contents.withLock { c in
            let config = DeviceConfig(apiToken: token)
            var state = DeviceRuntimeState()
            state.startCount = c.state.startCount
            try Self.persist(config, to: configPath)
            try Self.persist(state, to: statePath)
            c = (config, state)
        }
    }

    /// Whether `presented` may use the API: always when no token is required.
    public func authorizes(token presented: String?) -> Bool {
        let (required, token) = contents.withLock { ($0.config.tokenRequired, $0.config.apiToken) }
        guard required else { return true }
        guard let presented else { return false }
        return token.constantTimeEquals(presented)
    }

    // MARK: - Files

    static func load<T: Decodable>(_ type: T.Type, from path: String, warnings: inout [String]) -> T? {
        let bytes: [UInt8]?
        do {
            bytes = try AtomicFile.read(path)
        } catch {
            warnings.append("cannot read \(path) (\(error)); starting with defaults")
            setAside(path, warnings: &warnings)
            return nil
        }
        guard let bytes else { return nil }
        do {
            return try JSONDecoder().decode(T.self, from: Data(bytes))
        } catch {
            warnings.append("\(path) is malformed (\(describe(error))); starting with defaults")
            setAside(path, warnings: &warnings)
            return nil
        }
    }

    static func setAside(_ path: String, warnings: inout [String]) {
        let aside = "\(path).corrupt-\(time(nil))"
        if rename(path, aside) == 0 {
            warnings.append("the bad file was kept as \(aside)")
        } else {
            warnings.append("could not keep the bad file aside: \(SystemError("rename", path: path))")
        }
    }

    static func persist<T: Encodable>(_ value: T, to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        var bytes = [UInt8](try encoder.encode(value))
        bytes.append(0x0A)
        var existing = stat()
        let creating = stat(path, &existing) != 0
        try AtomicFile.write(bytes, to: path, mode: 0o600)
        // A file root creates (the CLI's first use, service stopped) belongs to the directory's owner, the
        // service's user; a replaced file keeps its owner (AtomicFile).
        var directory = stat()
        if creating, geteuid() == 0, stat(AtomicFile.directory(of: path), &directory) == 0 {
            _ = chown(path, directory.st_uid, directory.st_gid)
        }
    }

    /// Decoding errors print the offending values in some toolchains; keep only the kind
    /// and the key path so a secret can never end up in a log line.
    static func describe(_ error: Error) -> String {
        guard let error = error as? DecodingError else { return "unreadable" }
        switch error {
        case .dataCorrupted(let ctx): return "not valid JSON at \(path(ctx.codingPath))"
        case .keyNotFound(let key, let ctx): return "missing \(path(ctx.codingPath + [key]))"
        case .typeMismatch(_, let ctx): return "wrong type at \(path(ctx.codingPath))"
        case .valueNotFound(_, let ctx): return "missing value at \(path(ctx.codingPath))"
        @unknown default: return "undecodable"
        }
    }

    static func path(_ keys: [CodingKey]) -> String {
        keys.isEmpty ? "top level" : keys.map(\.stringValue).joined(separator: ".")
    }

    /// 32 random bytes from the kernel (/dev/urandom; Glibc's module does not export
    /// `getrandom`), hex encoded.
    public static func generateToken() throws -> Secret {
        guard let bytes = try AtomicFile.read(prefix: 32, of: "/dev/urandom"), bytes.count == 32 else {
            throw SystemError("read", path: "/dev/urandom", errno: EIO)
        }
        let hex = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(64)
        for b in bytes {
            out.append(hex[Int(b >> 4)])
            out.append(hex[Int(b & 0xF)])
        }
        return Secret(String(decoding: out, as: UTF8.self))
    }
}

extension StateStore {
    /// The configuration as stored, read without writing anything (the CLI, which must not touch the running
    /// service's files). Nil when there is no configuration yet.
    public static func readConfig(directory: String) throws -> DeviceConfig? {
        guard let bytes = try AtomicFile.read("\(directory)/\(configFileName)") else { return nil }
        return try JSONDecoder().decode(DeviceConfig.self, from: Data(bytes))
    }
}
