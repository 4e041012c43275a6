import Platform

/// One line of `iw phy … info`'s "valid interface combinations", e.g.
/// `#{ managed } <= 1, #{ AP } <= 1, total <= 2, #channels <= 1`.
public struct InterfaceCombination: Sendable, Equatable {
    public struct Limit: Sendable, Equatable {
        public var types: [String]
        public var max: Int
    }
    public var limits: [Limit]
    public var total: Int
    public var channels: Int

    /// Whether one interface of each of `types` may exist at once (each takes a slot in a limit that names it).
    public func allows(_ types: [String]) -> Bool {
        guard types.count <= total else { return false }
        var left = limits.map(\.max)
        func place(_ i: Int) -> Bool {
            if i == types.count { return true }
            for (k, limit) in limits.enumerated() where left[k] > 0 && limit.types.contains(types[i]) {
                left[k] -= 1
                if place(i + 1) { return true }
                left[k] += 1
            }
            return false
        }
        return place(0)
    }

    /// Parses the combination lines of `iw phy … info` (or `iw list`) output; continuation lines are joined.
    public static func parse(phyInfo text: String) -> [InterfaceCombination] {
        var entries: [String] = []
        var inside = false
        for raw in text.split(separator: "\n", omittingEmptySubsequences: false) {
            let line = raw.trimmingSpaces
            if line.hasPrefix("valid interface combinations:") { inside = true; continue }
            guard inside else { continue }
            if line.hasPrefix("* #") {
                entries.append(String(line.dropFirst(2)))
            } else if !entries.isEmpty, line.hasPrefix("total") || line.hasPrefix("#") {
                entries[entries.count - 1] += " " + line
            } else {
                inside = false
            }
        }
        return entries.compactMap(parseEntry)
    }

    static func parseEntry(_ text: String) -> InterfaceCombination? {
        // Split at the commas outside braces: "#{ P2P-client, P2P-GO } <= 1" is one part.
        var parts: [String] = [], current = "", depth = 0
        for c in text {
            if c == "{" { depth += 1 } else if c == "}" { depth -= 1 }
            if c == "," && depth == 0 {
                parts.append(current)
                current = ""
            } else {
                current.append(c)
            }
        }
        parts.append(current)
        func number(after part: String) -> Int? {
            guard let le = part.lastIndex(of: "=") else { return nil }
            return Int(part[part.index(after: le)...].trimmingSpaces)
        }
        var limits: [Limit] = []
        var total = 0, channels = 1
        for raw in parts {
            let part = raw.trimmingSpaces
            if part.hasPrefix("#{"), let close = part.firstIndex(of: "}") {
                let inner = part[part.index(part.startIndex, offsetBy: 2)..<close]
                let types: [String] = inner.split(separator: ",").map { $0.trimmingSpaces }
                guard let max = number(after: part) else { return nil }
                limits.append(Limit(types: types, max: max))
            } else if part.hasPrefix("total") {
                total = number(after: part) ?? 0
            } else if part.hasPrefix("#channels") {
                channels = number(after: part) ?? 1
            }
        }
        guard !limits.isEmpty, total > 0 else { return nil }
        return InterfaceCombination(limits: limits, total: total, channels: channels)
    }
}

extension StringProtocol {
    var trimmingSpaces: String {
        String(drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" || $0 == "\r" }.reversed())
    }
}

/// The radio through `iw` (nl80211): can it run an access point beside the client, and the virtual access point
/// interface (`uap0`) that lets it. Creating the interface needs CAP_NET_ADMIN, which the service does not have:
/// `meterext wifi prepare-radio` does it as root before the service starts (`ExecStartPre=+` in the unit); the
/// service only looks.
public struct IWRadio: Sendable {
    public static let defaultAccessPointInterface = "uap0"

    public let client: String
    public let iw: String
    let runner: Subprocess

    public init(client: String = "wlan0", iw: String = "iw", environment: [String]? = nil) {
        self.client = client
        self.iw = iw
        self.runner = Subprocess(environment: environment)
    }

    /// What the radio can do, in words for the log and for `prepare-radio`.
    public enum Capability: Sendable, Equatable {
        /// Access point and client at once (on the client's channel when `sameChannel`).
        case concurrent(sameChannel: Bool)
        /// One at a time: the access point and the client take turns.
        case single
    }

    func run(_ args: [CommandArgument]) throws -> ProcessResult {
        do { return try runner.run(iw, args, timeout: 10) } catch let error as SystemError where error.operation == "find program" {
            throw WiFiBackendError("iw not found (install the iw package)")
        }
    }

    /// `phy0` for `wlan0` (`iw dev wlan0 info` → `wiphy 0`).
    public func phy() throws -> String {
        let r = try run(["dev", .plain(client), "info"])
        guard r.exitCode == 0, !r.timedOut else {
            throw WiFiBackendError("no WiFi interface \(client) (\(Self.message(r)))")
        }
        for line in r.stdout.split(separator: "\n") {
            let t = line.trimmingSpaces
            if t.hasPrefix("wiphy "), let n = Int(t.dropFirst(6)) { return "phy\(n)" }
        }
        throw WiFiBackendError("iw dev \(client) info named no wiphy")
    }

    public func capability() throws -> Capability {
        let phy = try phy()
        let r = try run(["phy", .plain(phy), "info"])
        guard r.exitCode == 0, !r.timedOut else { throw WiFiBackendError("iw phy \(phy) info failed: \(Self.message(r))") }
        let both = InterfaceCombination.parse(phyInfo: r.stdout).filter { $0.allows(["managed", "AP"]) }
        guard !both.isEmpty else { return .single }
        return .concurrent(sameChannel: both.allSatisfy { $0.channels <= 1 })
    }

    public func exists(_ interface: String) -> Bool {
        guard let r = try? run(["dev", .plain(interface), "info"]) else { return false }
        return r.exitCode == 0 && !r.timedOut
    }

    /// Adds the access point interface (`iw dev wlan0 interface add uap0 type __ap`) unless it exists.
    /// Returns true when it was created now.
    @discardableResult
    public func ensureAccessPointInterface(_ name: String = IWRadio.defaultAccessPointInterface) throws -> Bool {
        if exists(name) { return false }
        let r = try run(["dev", .plain(client), "interface", "add", .plain(name), "type", "__ap"])
        guard r.exitCode == 0, !r.timedOut else {
            throw WiFiBackendError("cannot add the access point interface \(name): \(Self.message(r))")
        }
        return true
    }

    static func message(_ r: ProcessResult) -> String {
        if r.timedOut { return "iw did not answer in time" }
        let text = (r.stderr.isEmpty ? r.stdout : r.stderr).split(separator: "\n").first.map(String.init) ?? ""
        return text.isEmpty ? "iw exit status \(r.exitCode.map(String.init) ?? "signal")" : text
    }
}
