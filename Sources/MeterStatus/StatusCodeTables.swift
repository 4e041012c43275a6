/// CalinMeter's postpaid quick reference, as data.
///
/// Source: the CalinMeter status-code guide (seeds 000 and 001). Where the guide was revised, the newer wording is
/// used; the AMI table's parenthetical explanations become `detail`. Codes missing from the guide (sub-codes 2, 10,
/// 19, 20 and their AMI codes 1002, 1010, 1019, 1020) are deliberately absent: an unknown code must stay unknown.
public enum StatusCodeTables {
    /// One row of the common short-code table.
    public struct ShortCodeRow: Sendable, Hashable {
        public var codes: ClosedRange<Int>
        public var meaning: String
        public var action: String
    }

    /// One row of the code-87 table; the AMI operating status is 1000 + `subCode` with the same cause and action.
    public struct DisconnectReasonRow: Sendable, Hashable {
        public var subCode: Int
        public var cause: String
        public var detail: String?
        public var action: String
        public var prepaidOnly: Bool
    }

    public static let shortCodes: [ShortCodeRow] = [
        row(1, "Cumulative total active kWh consumption", "Record/check usage trend"),
        row(14, "Load threshold", "Compare with customer load, adjust if configured too low"),
        row(31, "Current total active power", "Check load at moment of query"),
        row(35, "Current total power factor", "If persistently low, investigate load/PF correction"),
        row(40, "Number of meter cover open events", "Check tamper log; reseal if necessary"),
        row(41...45, "Last 1st–5th cover open times", "Verify tamper history"),
        row(46, "Number of overload trip events", "Review load demand; advise upgrade if frequent"),
        row(47...51, "Last 1st–5th overload trip times", "Identify when overloads occurred"),
        row(52, "Number of power down events", "Check supply reliability"),
        row(53...57, "Last 1st–5th power down times", "Cross-check with outage records"),
        row(58, "Number of phase down events", "Investigate supply-side issues"),
        row(87, "Reason for relay disconnecting", "Use the code-87 sub-code table (87.N) for the action"),
    ]

    public static let disconnectReasons: [DisconnectReasonRow] = [
        reason(0, "Relay Closed", "normal supply", "No action, meter supplying load."),
        reason(1, "No Credit", nil, "Ignore in postpaid — not applicable (prepaid only).", prepaidOnly: true),
        reason(3, "Over Power", "load exceeded threshold",
               "Check load vs. configured trip limit; advise reduction or adjust threshold."),
        reason(4, "Relay Test", nil, "No action needed; relay was tested."),
        reason(5, "Open Upper Cover", "tamper", "Reseal cover + enter clear tamper token."),
        reason(6, "Open Terminal Cover", "tamper", "Reseal cover + enter clear tamper token."),
        reason(7, "Remote Disconnect", nil, "Confirm backend/HES instruction; reconnect if not intentional."),
        reason(8, "Not-active", "meter not commissioned", "Commission meter (default code: 12345)."),
        reason(9, "Over Current", nil, "Inspect customer load for surges; advise customer or adjust protection."),
        reason(11, "Over Voltage", nil, "Supply voltage too high; report to utility/feeder operator."),
        reason(12, "Under Voltage", nil, "Supply voltage too low; report to utility/feeder operator."),
        reason(13, "Current Reverse", "possible tamper/wiring issue",
               "Inspect wiring; correct polarity; clear tamper if needed."),
        reason(14, "Open Enclosure Cover", "tamper", "Reseal + enter clear tamper token."),
        reason(15, "Magnetic Field Interference", "tamper", "Investigate possible magnet tampering; clear tamper."),
        reason(16, "Current Imbalance", nil, "Check for abnormal phase imbalance; troubleshoot load."),
        reason(17, "Neutral Line Interference", nil, "Inspect neutral wiring/tamper."),
        reason(18, "Bypass", "illegal connection", "Investigate for illegal bypass and escalate if confirmed."),
        reason(21, "Voltage Imbalance", nil, "Investigate feeder phase imbalance."),
        reason(22, "Thermal Overload", nil, "Meter overheating; check load; allow cooling."),
        reason(23, "Low Power Factor", nil, "Check load PF; recommend correction (capacitors)."),
        reason(24, "Tariff Error", nil, "Tariff configuration issue; escalate to AMI admin."),
        reason(25, "Remote Reconnect + Local Trip", nil,
               "Local fault condition persists; troubleshoot before reconnection."),
    ]

    private static func row(_ code: Int, _ meaning: String, _ action: String) -> ShortCodeRow {
        ShortCodeRow(codes: code...code, meaning: meaning, action: action)
    }

    private static func row(_ codes: ClosedRange<Int>, _ meaning: String, _ action: String) -> ShortCodeRow {
        ShortCodeRow(codes: codes, meaning: meaning, action: action)
    }

    private static func reason(_ subCode: Int, _ cause: String, _ detail: String?, _ action: String,
                               prepaidOnly: Bool = false) -> DisconnectReasonRow {
        DisconnectReasonRow(subCode: subCode, cause: cause, detail: detail, action: action, prepaidOnly: prepaidOnly)
    }
}
