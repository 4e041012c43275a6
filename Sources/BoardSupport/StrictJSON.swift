import Platform
import FoundationEssentials
import Glibc

/// JSONDecoder silently ignores keys it does not know, so a typo such as `"baudrate"` in an installer's file would be
/// dropped without a word. The config types call this first so the typo becomes an error naming the key.
struct AnyKey: CodingKey {
    let stringValue: String
    var intValue: Int? { nil }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

func rejectUnknownKeys(in decoder: any Decoder, known: [String]) throws {
    let container = try decoder.container(keyedBy: AnyKey.self)
    let unknown = container.allKeys.map(\.stringValue).filter { !known.contains($0) }.sorted()
    guard unknown.isEmpty else {
        throw DecodingError.dataCorrupted(.init(
            codingPath: decoder.codingPath,
            debugDescription: "unknown key\(unknown.count > 1 ? "s" : "") \(unknown.map { "'\($0)'" }.joined(separator: ", "))"
                + " (known keys: \(known.joined(separator: ", ")))"))
    }
}

extension KeyedDecodingContainer {
    /// A string at `key`, parsed with `parse` (MeterHardware's own parsers, so a profile, the config file and
    /// `--direction` accept exactly the same text). A parse failure becomes a DecodingError at that key, so the
    /// message names the key and carries the parser's explanation.
    func decodeParsed<T>(_ parse: (String) throws -> T, forKey key: Key) throws -> T {
        try parsed(decode(String.self, forKey: key), with: parse, forKey: key)
    }

    /// As `decodeParsed`, nil when the key is missing or null.
    func decodeParsedIfPresent<T>(_ parse: (String) throws -> T, forKey key: Key) throws -> T? {
        guard let text = try decodeIfPresent(String.self, forKey: key) else { return nil }
        return try parsed(text, with: parse, forKey: key)
    }

    private func parsed<T>(_ text: String, with parse: (String) throws -> T, forKey key: Key) throws -> T {
        do { return try parse(text) } catch {
            throw DecodingError.dataCorruptedError(forKey: key, in: self, debugDescription: String(describing: error))
        }
    }
}

/// One readable sentence for a decoding failure: where in the document, and what.
func describe(_ error: any Error) -> String {
    guard let error = error as? DecodingError else { return String(describing: error) }
    func path(_ codingPath: [any CodingKey]) -> String {
        codingPath.isEmpty ? "" : "at '" + codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }
            .joined(separator: ".") + "': "
    }
    switch error {
    case .typeMismatch(let type, let context):
        return "\(path(context.codingPath))expected \(type) (\(context.debugDescription))"
    case .valueNotFound(let type, let context):
        return "\(path(context.codingPath))missing value of type \(type)"
    case .keyNotFound(let key, let context):
        return "\(path(context.codingPath))missing required key '\(key.stringValue)'"
    case .dataCorrupted(let context):
        // The underlying JSON parse error (with line and column) is more useful than the generic summary.
        let underlying = (context.underlyingError as? any CustomStringConvertible).map { " (\($0))" } ?? ""
        return "\(path(context.codingPath))\(context.debugDescription)\(underlying)"
    @unknown default:
        return String(describing: error)
    }
}

/// Reads a whole small file (profiles, config) through Platform's reader; the error says which file could not be
/// read, in the words the installer sees.
func readConfigFile(_ path: String) throws(FileReadError) -> Data {
    do { return Data(try readSmallFile(path)) } catch { throw FileReadError(path: path, errno: error.errno) }
}

/// A profile or config file that could not be read.
public struct FileReadError: Error, CustomStringConvertible, Equatable {
    public let path: String
    public let errno: Int32
    public var description: String { "cannot read \(path): \(String(cString: strerror(errno)))" }
}
