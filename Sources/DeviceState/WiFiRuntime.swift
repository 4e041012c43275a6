import FoundationEssentials
import Glibc
import Platform

/// The service's runtime directory (`RuntimeDirectory=meterext`, `/run/meterext`): a tmpfs emptied at every boot
/// and kept across service restarts (`RuntimeDirectoryPreserve=yes`). It tells a new boot from a service restart
/// inside the unit's sandbox, where `ProcSubset=pid` hides `/proc/sys/kernel/random/boot_id`, and keeps what the WiFi
/// policy must not forget when the service restarts (`WiFiPolicy.Memory`).
public struct WiFiRuntime: Sendable {
    public static let defaultDirectory = "/run/meterext"
    static let markerName = "booted"
    static let memoryName = "wifi-policy.json"

    public let directory: String

    public init(directory: String) { self.directory = directory }

    /// `$RUNTIME_DIRECTORY` (set by systemd; the first entry when it lists several), else `/run/meterext` for root,
    /// else `$XDG_RUNTIME_DIR/meterext` (a development run as an ordinary user: also a tmpfs emptied at boot).
    public static func directoryFromEnvironment() -> String {
        func env(_ name: String) -> String? {
            getenv(name).map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 }
        }
        if let value = env("RUNTIME_DIRECTORY") {
            return String(value.split(separator: ":").first ?? Substring(value))
        }
        if geteuid() != 0, let user = env("XDG_RUNTIME_DIR") { return user + "/meterext" }
        return defaultDirectory
    }

    /// True the first time it is called in this boot (no marker yet); leaves the marker. When the directory cannot
    /// be used the answer is true: opening the set-up access point once too often is the safe side.
    public func claimBoot() -> Bool {
        let marker = directory + "/" + Self.markerName
        if case .some(.some) = try? AtomicFile.read(marker) { return false }
        do {
            try AtomicFile.makeDirectory(directory, mode: 0o700)
            try AtomicFile.write(Array("meterext started in this boot\n".utf8), to: marker, mode: 0o600)
        } catch {}
        return true
    }

    public func loadMemory() -> WiFiPolicy.Memory? {
        guard case .some(.some(let bytes)) = try? AtomicFile.read(directory + "/" + Self.memoryName) else { return nil }
        return try? JSONDecoder().decode(WiFiPolicy.Memory.self, from: Data(bytes))
    }

    public func saveMemory(_ memory: WiFiPolicy.Memory) {
        guard let data = try? JSONEncoder().encode(memory) else { return }
        try? AtomicFile.write(Array(data), to: directory + "/" + Self.memoryName, mode: 0o600)
    }
}
