/// nmcli's terse output (`-t`, `--escape yes`): fields separated by `:`, and a `:` or `\`
/// inside a value escaped with `\` (so a BSSID reads `DC\:A6\:32\:01\:02\:03`).
/// Multi-line views (`device show`) print one `NAME:value` per line, same escaping.
enum NmcliTerse {
    /// Splits one line into its unescaped fields.
    static func fields(_ line: Substring) -> [String] {
        var out: [String] = []
        var current = ""
        var escaped = false
        for ch in line {
            if escaped {
                current.append(ch)
                escaped = false
            } else if ch == "\\" {
                escaped = true
            } else if ch == ":" {
                out.append(current)
                current = ""
            } else {
                current.append(ch)
            }
        }
        if escaped { current.append("\\") }
        out.append(current)
        return out
    }

    static func rows(_ output: String) -> [[String]] {
        output.split(separator: "\n", omittingEmptySubsequences: true).map { fields($0) }
    }

    /// `NAME:value` lines as (name, value), values unescaped and kept whole (an IPv6
    /// address contains escaped colons).
    static func properties(_ output: String) -> [(name: String, value: String)] {
        output.split(separator: "\n", omittingEmptySubsequences: true).compactMap { line in
            guard let colon = line.firstIndex(of: ":") else { return nil }
            let name = String(line[..<colon])
            let value = fields(line[line.index(after: colon)...]).joined(separator: ":")
            return (name, value)
        }
    }
}
