/// Plain text for field staff (`meterext status-code N`). One code per block; the first line always names the
/// table, because the same number means different things in different tables.
public enum StatusCodeFormatter {
    /// For example:
    ///
    ///     AMI operating status 1008 (code 87 sub-code 8)
    ///     Cause:  Not-active (meter not commissioned)
    ///     Action: Commission meter (default code: 12345).
    public static func format(_ entry: StatusCodeEntry) -> String {
        var lines: [String] = []
        switch entry.table {
        case .amiOperatingStatus:
            lines.append("AMI operating status \(entry.code)" + (entry.subCode.map { " (code 87 sub-code \(StatusCodeEntry.subCodeText($0)))" } ?? ""))
            lines.append("Cause:  \(entry.display)")
        case .relayDisconnectReason:
            lines.append("Code 87 sub-code \(StatusCodeEntry.subCodeText(entry.code))" + (entry.amiCode.map { " (AMI operating status \($0))" } ?? ""))
            lines.append("Cause:  \(entry.display)")
        case .shortCode:
            let run = entry.codeRange.count > 1
                ? " (one of \(two(entry.codeRange.lowerBound))-\(two(entry.codeRange.upperBound)))" : ""
            lines.append("Short code \(two(entry.code))\(run)")
            lines.append("Meaning: \(entry.display)")
        }
        lines.append((entry.table == .shortCode ? "Action:  " : "Action: ") + entry.action)
        if entry.prepaidOnly {
            lines.append("Note:   prepaid only; postpaid deployments ignore this code.")
        }
        return lines.joined(separator: "\n")
    }

    /// Several matches (an ambiguous number) separated by a blank line; a clear message when nothing matched.
    public static func format(_ entries: [StatusCodeEntry], query: String) -> String {
        guard !entries.isEmpty else { return "Unknown status code: \(query)" }
        return entries.map(format).joined(separator: "\n\n")
    }

    private static func two(_ code: Int) -> String { code < 10 ? "0\(code)" : String(code) }
}
