import CSodium

/// libsodium: ed25519 signatures, SHA-256/SHA-512 and base64. Nothing here is hand-written crypto; these are thin
/// Swift signatures over the library's functions.
public enum Crypto {
    private static let initialized: Bool = sodium_init() >= 0

    static func ensureInitialized() {
        precondition(initialized, "libsodium failed to initialise")
    }

    public static func sha256(_ bytes: [UInt8]) -> [UInt8] {
        var hasher = SHA256Hasher()
        hasher.update(bytes)
        return hasher.finalize()
    }

    public static func sha512(_ bytes: [UInt8]) -> [UInt8] {
        var hasher = SHA512Hasher()
        hasher.update(bytes)
        return hasher.finalize()
    }

    public static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(bytes.count * 2)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    public static func base64(_ bytes: [UInt8]) -> String {
        ensureInitialized()
        let length = (bytes.count + 2) / 3 * 4 + 1
        var out = [CChar](repeating: 0, count: length)
        _ = sodium_bin2base64(&out, length, bytes, bytes.count, sodium_base64_VARIANT_ORIGINAL)
        return String(cString: out)
    }

    public static func fromBase64(_ text: String) -> [UInt8]? {
        ensureInitialized()
        let input = Array(text.utf8)
        var out = [UInt8](repeating: 0, count: input.count)
        var length = 0
        let rc = input.withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) {
                sodium_base642bin(&out, out.count, $0.baseAddress, $0.count, nil, &length, nil,
                                  sodium_base64_VARIANT_ORIGINAL)
            }
        }
        guard rc == 0 else { return nil }
        return Array(out[..<length])
    }
}

public struct SHA256Hasher {
    private var state = crypto_hash_sha256_state()

    public init() {
        Crypto.ensureInitialized()
        crypto_hash_sha256_init(&state)
    }

    public mutating func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { update($0) }
    }

    public mutating func update(_ buffer: UnsafeRawBufferPointer) {
        guard buffer.count > 0 else { return }
        crypto_hash_sha256_update(&state, buffer.bindMemory(to: UInt8.self).baseAddress, UInt64(buffer.count))
    }

    public mutating func finalize() -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: 32)
        crypto_hash_sha256_final(&state, &digest)
        return digest
    }
}

public struct SHA512Hasher {
    private var state = crypto_hash_sha512_state()

    public init() {
        Crypto.ensureInitialized()
        crypto_hash_sha512_init(&state)
    }

    public mutating func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { update($0) }
    }

    public mutating func update(_ buffer: UnsafeRawBufferPointer) {
        guard buffer.count > 0 else { return }
        crypto_hash_sha512_update(&state, buffer.bindMemory(to: UInt8.self).baseAddress, UInt64(buffer.count))
    }

    public mutating func finalize() -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: 64)
        crypto_hash_sha512_final(&state, &digest)
        return digest
    }
}

public enum Ed25519 {
    public static let publicKeyBytes = 32
    public static let secretKeyBytes = 64
    public static let signatureBytes = 64

    public static func generateKeyPair() -> (publicKey: [UInt8], secretKey: [UInt8]) {
        Crypto.ensureInitialized()
        var pk = [UInt8](repeating: 0, count: publicKeyBytes)
        var sk = [UInt8](repeating: 0, count: secretKeyBytes)
        crypto_sign_ed25519_keypair(&pk, &sk)
        return (pk, sk)
    }

    public static func sign(_ message: [UInt8], secretKey: [UInt8]) -> [UInt8] {
        Crypto.ensureInitialized()
        precondition(secretKey.count == secretKeyBytes)
        var signature = [UInt8](repeating: 0, count: signatureBytes)
        crypto_sign_ed25519_detached(&signature, nil, message, UInt64(message.count), secretKey)
        return signature
    }

    public static func verify(signature: [UInt8], message: [UInt8], publicKey: [UInt8]) -> Bool {
        Crypto.ensureInitialized()
        guard signature.count == signatureBytes, publicKey.count == publicKeyBytes else { return false }
        return crypto_sign_ed25519_verify_detached(signature, message, UInt64(message.count), publicKey) == 0
    }

    /// The public key's half of an ed25519 secret key (libsodium stores seed || public key).
    public static func publicKey(fromSecretKey secretKey: [UInt8]) -> [UInt8] {
        Array(secretKey[32..<64])
    }

    /// Short key identifier written into images: the first 8 bytes of SHA-256(public key).
    public static func keyID(publicKey: [UInt8]) -> [UInt8] {
        Array(Crypto.sha256(publicKey).prefix(8))
    }
}
