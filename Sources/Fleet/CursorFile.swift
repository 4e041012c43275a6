import FoundationEssentials
import Platform

/// The uplink's cursor (issue 16): per meter address, the last interval seq whose PUBACK came (and every earlier
/// one's). Its own small file in the state directory, replaced atomically (write, fsync, rename, fsync the
/// directory), so a power cut leaves the old or the new cursor, never a torn one — and an old cursor only means a
/// few intervals are sent again with their original seq.
public struct CursorFile: Sendable {
    public let path: String

    public init(stateDirectory: String) { path = stateDirectory + "/mqtt-cursor.json" }

    struct Content: Codable {
        var version = 1
        /// Meter address (as a decimal string) → seq.
        var cursors: [String: Int64]
    }

    /// The stored cursors; empty when there is no file yet. A file that cannot be parsed is reported: the uplink
    /// then starts from the beginning of the store (repeats, never losses).
    public func load() throws -> [UInt8: Int64] {
        guard let bytes = try AtomicFile.read(path) else { return [:] }
        let content = try JSONDecoder().decode(Content.self, from: Data(bytes))
        var out: [UInt8: Int64] = [:]
        for (k, v) in content.cursors { if let a = UInt8(k) { out[a] = v } }
        return out
    }

    public func save(_ cursors: [UInt8: Int64]) throws {
        var c: [String: Int64] = [:]
        for (k, v) in cursors { c[String(k)] = v }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        try AtomicFile.write(Array(encoder.encode(Content(cursors: c))), to: path, mode: 0o600)
    }
}
