import Glibc

/// Key files are one line of text, so they can be pasted, diffed and shipped in a Debian package:
///   public:  `meterext-ed25519-public <base64 of 32 bytes>`
///   secret:  `meterext-ed25519-secret <base64 of 64 bytes>` (libsodium layout: seed followed by public key)
public enum SigningKeys {
    static let publicTag = "meterext-ed25519-public"
    static let secretTag = "meterext-ed25519-secret"

    public struct PublicKey: Equatable, Sendable {
        public var bytes: [UInt8]
        public var source: String
        public var id: [UInt8] { Ed25519.keyID(publicKey: bytes) }
        public var idHex: String { Crypto.hex(id) }
    }

    public static func encodePublic(_ key: [UInt8]) -> String { "\(publicTag) \(Crypto.base64(key))\n" }
    public static func encodeSecret(_ key: [UInt8]) -> String { "\(secretTag) \(Crypto.base64(key))\n" }

    static func decode(_ text: String, tag: String, length: Int) -> [UInt8]? {
        let line = text.split(whereSeparator: { $0 == "\n" || $0 == "\r" })
            .first(where: { !$0.hasPrefix("#") && !$0.allSatisfy({ $0 == " " }) })
        guard let fields = line?.split(separator: " "), fields.count >= 2, fields[0] == tag,
              let bytes = Crypto.fromBase64(String(fields[1])), bytes.count == length else { return nil }
        return bytes
    }

    public static func readSecretKey(path: String) throws -> [UInt8] {
        let text = String(decoding: try FileIO.readFile(path, limit: 4096), as: UTF8.self)
        guard let key = decode(text, tag: secretTag, length: Ed25519.secretKeyBytes) else {
            throw UpdateError("bad_key", "\(path) is not a meterext secret key (expected '\(secretTag) <base64>')")
        }
        return key
    }

    public static func readPublicKey(path: String) throws -> PublicKey {
        let text = String(decoding: try FileIO.readFile(path, limit: 4096), as: UTF8.self)
        guard let key = decode(text, tag: publicTag, length: Ed25519.publicKeyBytes) else {
            throw UpdateError("bad_key", "\(path) is not a meterext public key (expected '\(publicTag) <base64>')")
        }
        return PublicKey(bytes: key, source: path)
    }

    /// All `*.pub` files in `directory`; unreadable or malformed files are reported through `log` and skipped,
    /// so one broken file cannot lock a board out of updates signed with its other keys.
    public static func loadTrustedKeys(directory: String, log: (String) -> Void = { _ in }) -> [PublicKey] {
        FileIO.listDirectory(directory).filter { $0.hasSuffix(".pub") }.compactMap { name in
            do { return try readPublicKey(path: directory + "/" + name) } catch {
                log("ignoring key file: \(error)")
                return nil
            }
        }
    }

    /// Writes a new key pair; the secret key file is created 0600 and never overwritten.
    public static func generate(secretPath: String, publicPath: String) throws -> PublicKey {
        let (pk, sk) = Ed25519.generateKeyPair()
        for path in [secretPath, publicPath] where FileIO.exists(path) {
            throw UpdateError("exists", "\(path) already exists; refusing to overwrite a key")
        }
        let fd = try FileIO.openFile(secretPath, O_WRONLY | O_CREAT | O_EXCL, mode: 0o600)
        defer { close(fd) }
        try FileIO.writeAll(fd, Array(encodeSecret(sk).utf8), path: secretPath)
        try FileIO.fsyncFile(fd, path: secretPath)
        try FileIO.atomicWrite(publicPath, Array(encodePublic(pk).utf8), mode: 0o644)
        return PublicKey(bytes: pk, source: publicPath)
    }
}
