/// A value that must never reach a log line, an API response or a `print`.
///
/// `description`, `debugDescription` and string interpolation all show `<redacted>`.
/// The real value is available only through `revealed`, which is meant for the few places
/// that hand it on (the nmcli call, the token comparison) — grep for it to audit them.
/// It is `Codable` as a plain string because the state files (mode 0600) must keep it.
public struct Secret: Codable, Hashable, Sendable, CustomStringConvertible, CustomDebugStringConvertible,
    CustomReflectable
{
    private let value: String

    public init(_ value: String) { self.value = value }

    /// The real value. Only for handing on to the system, never for display.
    public var revealed: String { value }

    public var isEmpty: Bool { value.isEmpty }

    public var description: String { "<redacted>" }
    public var debugDescription: String { "Secret(<redacted>)" }
    public var customMirror: Mirror { Mirror(self, children: [:]) }

    public init(from decoder: Decoder) throws {
        value = try decoder.singleValueContainer().decode(String.self)
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(value)
    }

    /// Compares in time independent of where the first difference is (API token check).
    public func constantTimeEquals(_ other: String) -> Bool {
        let a = Array(value.utf8), b = Array(other.utf8)
        var diff = UInt8(a.count == b.count ? 0 : 1)
        for i in 0..<max(a.count, b.count) {
            diff |= (i < a.count ? a[i] : 0) ^ (i < b.count ? b[i] : 0)
        }
        return diff == 0
    }
}
