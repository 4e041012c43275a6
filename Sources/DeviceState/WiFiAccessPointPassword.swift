import Glibc
import Platform

/// The set-up access point's per-device password (`meterext wifi ap-password`). Kept in config.json (updates keep
/// it), cleared back to `AccessPointSettings.defaultPassword` (`welinkwmlink`) by a factory reset.
public enum WiFiAccessPointPassword {
    /// No 0/o, 1/l/i: it is read off a printed label.
    static let alphabet = Array("abcdefghjkmnpqrstuvwxyz23456789".utf8)

    /// 12 random characters from `alphabet` in three groups, e.g. `k7mq-x3ta-9wpe` (about 59 bits).
    public static func generate() throws -> Secret {
        var chars: [UInt8] = []
        while chars.count < 12 {
            guard let bytes = try AtomicFile.read(prefix: 32, of: "/dev/urandom"), !bytes.isEmpty else {
                throw SystemError("read", path: "/dev/urandom", errno: EIO)
            }
            // Rejection sampling: 248 = 8 × 31, so every character is equally likely.
            for b in bytes where b < 248 && chars.count < 12 { chars.append(alphabet[Int(b) % alphabet.count]) }
        }
        let text = String(decoding: chars, as: UTF8.self)
        let groups = stride(from: 0, to: 12, by: 4).map { i in
            String(text[text.index(text.startIndex, offsetBy: i)..<text.index(text.startIndex, offsetBy: i + 4)])
        }
        return Secret(groups.joined(separator: "-"))
    }

    /// nil when `password` can be a WPA2 passphrase typed on a phone: 8 to 63 printable ASCII characters.
    public static func problem(with password: String) -> String? {
        let scalars = password.unicodeScalars
        guard (8...63).contains(scalars.count) else { return "the access point password must have 8 to 63 characters" }
        guard scalars.allSatisfy({ $0.value >= 0x20 && $0.value < 0x7F }) else {
            return "the access point password must be printable ASCII (letters, digits, punctuation, space)"
        }
        return nil
    }
}
