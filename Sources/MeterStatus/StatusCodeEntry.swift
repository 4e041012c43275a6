/// The three tables of CalinMeter's postpaid quick reference. The same number can mean different things in
/// different tables (14 is the short code "Load threshold" and the code-87 sub-code "Open Enclosure Cover"), so
/// every entry carries its table and every text shown to field staff names it.
public enum StatusCodeTable: String, Sendable, CaseIterable, Hashable {
    /// Common meter status / short codes (01, 14, 31, …, 87).
    case shortCode = "short-code"
    /// Code 87: the reason the relay disconnected, by sub-code (00, 1, 3–9, 11–18, 21–25).
    case relayDisconnectReason = "code-87"
    /// AMI operating status 1000–1025 (AMI code = 1000 + code-87 sub-code).
    case amiOperatingStatus = "ami"

    public var title: String {
        switch self {
        case .shortCode: return "Short code"
        case .relayDisconnectReason: return "Code 87 sub-code"
        case .amiOperatingStatus: return "AMI operating status"
        }
    }
}

/// One row of a CalinMeter code table, in the words postpaid field staff use.
public struct StatusCodeEntry: Sendable, Hashable {
    public var table: StatusCodeTable
    /// The code in its own table: the AMI code (1003), the code-87 sub-code (3) or the short code (42).
    public var code: Int
    /// The row the code belongs to. Short codes come in runs ("41–45: last 1st–5th cover open times"); every
    /// other row holds a single code.
    public var codeRange: ClosedRange<Int>
    /// The code-87 sub-code of an AMI or code-87 entry; nil for short codes.
    public var subCode: Int?
    /// Short display text: "Over Power", "Not-active", or a short code's meaning.
    public var cause: String
    /// What the display text stands for, when the guide explains it ("load exceeded threshold").
    public var detail: String?
    /// What field staff should do.
    public var action: String
    /// Credit codes only matter to prepaid deployments; postpaid teams ignore them.
    public var prepaidOnly: Bool

    public init(table: StatusCodeTable, code: Int, codeRange: ClosedRange<Int>? = nil, subCode: Int?,
                cause: String, detail: String? = nil, action: String, prepaidOnly: Bool = false) {
        self.table = table
        self.code = code
        self.codeRange = codeRange ?? code...code
        self.subCode = subCode
        self.cause = cause
        self.detail = detail
        self.action = action
        self.prepaidOnly = prepaidOnly
    }

    /// The AMI operating status that corresponds to this entry, or nil for short codes.
    public var amiCode: Int? { subCode.map { StatusCodes.amiBase + $0 } }

    /// Cause with its explanation: "Over Power (load exceeded threshold)".
    public var display: String {
        guard let detail else { return cause }
        return "\(cause) (\(detail))"
    }

    /// A code-87 sub-code as the guide writes it: "00" for relay closed, otherwise without leading zeros ("3", "13").
    public static func subCodeText(_ subCode: Int) -> String { subCode == 0 ? "00" : String(subCode) }

    /// How the code is written in its table: "1003", "87.3", "87.00", "01".
    public var label: String {
        switch table {
        case .amiOperatingStatus: return String(code)
        case .relayDisconnectReason: return "87.\(Self.subCodeText(code))"
        case .shortCode: return code < 10 ? "0\(code)" : String(code)
        }
    }
}
