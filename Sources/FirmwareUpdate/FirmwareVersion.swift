/// Orders firmware version strings for the anti-rollback rule. Semantic-versioning precedence, tolerant of any
/// string `UpdateImageHeader.isValidVersion` accepts: build metadata after `+` is ignored; the core and the
/// pre-release part (after the first `-`) are dot-separated identifiers compared numerically when both are digits,
/// otherwise as text, digits before text; a version with a pre-release part comes before the same version without;
/// a missing core component counts as 0 (`1.2` equals `1.2.0`).
public struct FirmwareVersion: Comparable, Sendable, CustomStringConvertible {
    public let text: String
    let core: [Substring]
    let preRelease: [Substring]

    public init(_ text: String) {
        self.text = text
        let withoutBuild = text.split(separator: "+", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        let parts = withoutBuild.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
        core = (parts.first ?? "").split(separator: ".", omittingEmptySubsequences: false)
        preRelease = parts.count > 1 ? parts[1].split(separator: ".", omittingEmptySubsequences: false) : []
    }

    public var description: String { text }

    /// -1, 0, 1 for two identifiers.
    static func compare(_ a: Substring, _ b: Substring) -> Int {
        let aNumeric = !a.isEmpty && a.utf8.allSatisfy { $0 >= 0x30 && $0 <= 0x39 }
        let bNumeric = !b.isEmpty && b.utf8.allSatisfy { $0 >= 0x30 && $0 <= 0x39 }
        switch (aNumeric, bNumeric) {
        case (true, true):
            let x = a.drop(while: { $0 == "0" }), y = b.drop(while: { $0 == "0" })
            if x.count != y.count { return x.count < y.count ? -1 : 1 }
            return x == y ? 0 : (x < y ? -1 : 1)
        case (true, false): return -1
        case (false, true): return 1
        case (false, false): return a == b ? 0 : (a < b ? -1 : 1)
        }
    }

    static func order(_ a: FirmwareVersion, _ b: FirmwareVersion) -> Int {
        for i in 0..<max(a.core.count, b.core.count) {
            let c = compare(i < a.core.count ? a.core[i] : "0", i < b.core.count ? b.core[i] : "0")
            if c != 0 { return c }
        }
        switch (a.preRelease.isEmpty, b.preRelease.isEmpty) {
        case (true, true): return 0
        case (true, false): return 1
        case (false, true): return -1
        case (false, false):
            for (x, y) in zip(a.preRelease, b.preRelease) {
                let c = compare(x, y)
                if c != 0 { return c }
            }
            return a.preRelease.count == b.preRelease.count ? 0 : (a.preRelease.count < b.preRelease.count ? -1 : 1)
        }
    }

    public static func < (a: FirmwareVersion, b: FirmwareVersion) -> Bool { order(a, b) < 0 }
    public static func == (a: FirmwareVersion, b: FirmwareVersion) -> Bool { order(a, b) == 0 }
}
