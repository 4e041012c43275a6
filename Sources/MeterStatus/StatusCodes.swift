/// Lookups over CalinMeter's code tables (`StatusCodeTables`).
public enum StatusCodes {
    /// AMI operating status = `amiBase` + code-87 sub-code.
    public static let amiBase = 1000

    /// The AMI operating status `code` (1000–1025), or nil when the guide has no such code.
    public static func ami(_ code: Int) -> StatusCodeEntry? {
        guard let row = disconnectReason(code - amiBase) else { return nil }
        return entry(row, table: .amiOperatingStatus, code: code)
    }

    /// The code-87 relay-disconnect reason `subCode`, or nil when the guide has no such sub-code.
    public static func relayDisconnectReason(_ subCode: Int) -> StatusCodeEntry? {
        guard let row = disconnectReason(subCode) else { return nil }
        return entry(row, table: .relayDisconnectReason, code: subCode)
    }

    /// The short code `code` (a code inside a run such as 43 answers with the run's row), or nil.
    public static func shortCode(_ code: Int) -> StatusCodeEntry? {
        guard let row = StatusCodeTables.shortCodes.first(where: { $0.codes.contains(code) }) else { return nil }
        return StatusCodeEntry(table: .shortCode, code: code, codeRange: row.codes, subCode: nil,
                               cause: row.meaning, action: row.action)
    }

    /// Every AMI operating status in the guide, in code order.
    public static var allAMI: [StatusCodeEntry] {
        StatusCodeTables.disconnectReasons.map { entry($0, table: .amiOperatingStatus, code: amiBase + $0.subCode) }
    }

    /// Every code-87 sub-code in the guide, in code order.
    public static var allRelayDisconnectReasons: [StatusCodeEntry] {
        StatusCodeTables.disconnectReasons.map { entry($0, table: .relayDisconnectReason, code: $0.subCode) }
    }

    /// One entry per short-code row (runs such as 41–45 once, under their first code).
    public static var allShortCodes: [StatusCodeEntry] {
        StatusCodeTables.shortCodes.compactMap { shortCode($0.codes.lowerBound) }
    }

    /// Text lookup for `meterext status-code N`.
    ///
    /// Accepts an AMI code ("1003"), a code-87 sub-code written "87.3", "87-3" or "87/3" (leading zeros allowed,
    /// "87.00"), or a bare number. A bare number below 100 can be both a short code and a code-87 sub-code
    /// ("14" is "Load threshold" and "Open Enclosure Cover"); all matches are returned, short codes first, each
    /// labelled with its table. Unknown codes and text that is not a code give an empty array.
    public static func lookup(_ text: String) -> [StatusCodeEntry] {
        let trimmed = text.trimmingSpaces
        if let separator = trimmed.firstIndex(where: { $0 == "." || $0 == "-" || $0 == "/" }) {
            guard let group = number(trimmed[..<separator].trimmingSpaces), group == 87,
                  let sub = number(trimmed[trimmed.index(after: separator)...].trimmingSpaces)
            else { return [] }
            return relayDisconnectReason(sub).map { [$0] } ?? []
        }
        guard let code = number(trimmed) else { return [] }
        return [shortCode(code), relayDisconnectReason(code), ami(code)].compactMap { $0 }
    }

    // MARK: - Private

    private static func disconnectReason(_ subCode: Int) -> StatusCodeTables.DisconnectReasonRow? {
        StatusCodeTables.disconnectReasons.first { $0.subCode == subCode }
    }

    private static func entry(_ row: StatusCodeTables.DisconnectReasonRow, table: StatusCodeTable,
                              code: Int) -> StatusCodeEntry {
        StatusCodeEntry(table: table, code: code, subCode: row.subCode, cause: row.cause, detail: row.detail,
                        action: row.action, prepaidOnly: row.prepaidOnly)
    }

    /// Decimal digits only (no sign, no spaces inside), at most six of them so `Int` cannot overflow.
    private static func number(_ text: String) -> Int? {
        guard !text.isEmpty, text.count <= 6, text.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
        return Int(text)
    }
}

extension StringProtocol {
    /// Without Foundation there is no `trimmingCharacters(in:)`; codes are typed by hand, so spaces and tabs
    /// around them are common.
    fileprivate var trimmingSpaces: String {
        let isSpace: (Character) -> Bool = { $0.isWhitespace }
        guard let first = firstIndex(where: { !isSpace($0) }), let last = lastIndex(where: { !isSpace($0) })
        else { return "" }
        return String(self[first...last])
    }
}
