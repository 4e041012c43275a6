import Glibc

/// The update image: a small signed header, a 64-byte ed25519 signature, then the payload (the `meterext` binary).
///
///     offset  size  field
///     0       8     magic "MXFWIMG\0"
///     8       2     format version (1), little endian
///     10      2     header length H (all header bytes, i.e. where the signature starts), little endian
///     12      1+n   target architecture, length-prefixed ASCII ("aarch64", "armv7", "x86_64")
///     ..      1+n   firmware version, length-prefixed ASCII ([A-Za-z0-9._+-], at most 64)
///     ..      8     payload length, little endian
///     ..      64    SHA-512 of the payload
///     ..      8     signing key id (first 8 bytes of SHA-256 of the public key); all zero = unsigned
///     H       64    ed25519 signature over bytes 0..<H (all zero = unsigned)
///     H+64    ...   payload, exactly `payload length` bytes, nothing after it
///
/// The signature covers the header, and the header commits to the payload through its SHA-512. That lets the board
/// verify a 30 MB image while streaming it from the SD card instead of holding it in RAM (the same construction as
/// signify/minisign's prehashed mode).
public struct UpdateImageHeader: Equatable, Sendable {
    public static let magic: [UInt8] = Array("MXFWIMG".utf8) + [0]
    public static let currentFormatVersion: UInt16 = 1
    static let maxHeaderLength = 512

    public var formatVersion: UInt16 = UpdateImageHeader.currentFormatVersion
    public var architecture: String
    public var firmwareVersion: String
    public var payloadLength: UInt64
    public var payloadSHA512: [UInt8]
    public var keyID: [UInt8] = [UInt8](repeating: 0, count: 8)

    public var isUnsigned: Bool { keyID.allSatisfy { $0 == 0 } }

    public init(architecture: String, firmwareVersion: String, payloadLength: UInt64, payloadSHA512: [UInt8],
                keyID: [UInt8] = [UInt8](repeating: 0, count: 8)) {
        self.architecture = architecture
        self.firmwareVersion = firmwareVersion
        self.payloadLength = payloadLength
        self.payloadSHA512 = payloadSHA512
        self.keyID = keyID
    }

    public static func isValidVersion(_ v: String) -> Bool {
        !v.isEmpty && v.utf8.count <= 64 && !v.hasPrefix(".") && v.utf8.allSatisfy {
            ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x61 && $0 <= 0x7A)
                || $0 == 0x2E || $0 == 0x5F || $0 == 0x2B || $0 == 0x2D
        }
    }

    public func encode() -> [UInt8] {
        var out = UpdateImageHeader.magic
        func le<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
        le(formatVersion)
        le(UInt16(0)) // patched below
        out.append(UInt8(architecture.utf8.count)); out += architecture.utf8
        out.append(UInt8(firmwareVersion.utf8.count)); out += firmwareVersion.utf8
        le(payloadLength)
        out += payloadSHA512
        out += keyID
        let length = UInt16(out.count)
        out[10] = UInt8(length & 0xFF)
        out[11] = UInt8(length >> 8)
        return out
    }

    /// Parses a header from the first bytes of an image; returns it with its length H.
    public static func decode(_ bytes: [UInt8]) throws -> (header: UpdateImageHeader, length: Int) {
        func corrupt(_ why: String) -> UpdateError { UpdateError("bad_image", "not a meterext update image: \(why)") }
        guard bytes.count >= 12 else {
            throw UpdateError("image_truncated", "the image is only \(bytes.count) bytes long; a header alone is more")
        }
        guard Array(bytes[0..<8]) == magic else { throw corrupt("wrong magic bytes (is this a bare binary?)") }
        let version = UInt16(bytes[8]) | UInt16(bytes[9]) << 8
        guard version == currentFormatVersion else {
            throw UpdateError("unsupported_format",
                              "image format version \(version) is not supported (this firmware reads version 1)")
        }
        let length = Int(UInt16(bytes[10]) | UInt16(bytes[11]) << 8)
        guard length <= maxHeaderLength, length >= 12 + 2 + 8 + 64 + 8 else { throw corrupt("header length \(length)") }
        guard bytes.count >= length else {
            throw UpdateError("image_truncated", "the image ends inside its header")
        }
        var at = 12
        func string() throws -> String {
            guard at < length else { throw corrupt("header fields overrun") }
            let n = Int(bytes[at]); at += 1
            guard at + n <= length else { throw corrupt("header fields overrun") }
            defer { at += n }
            return String(decoding: bytes[at..<at + n], as: UTF8.self)
        }
        let arch = try string()
        let fw = try string()
        guard at + 8 + 64 + 8 == length else { throw corrupt("header length does not match its fields") }
        var payloadLength: UInt64 = 0
        for i in 0..<8 { payloadLength |= UInt64(bytes[at + i]) << (8 * UInt64(i)) }
        at += 8
        let sha = Array(bytes[at..<at + 64]); at += 64
        let keyID = Array(bytes[at..<at + 8])
        guard isValidVersion(fw) else { throw corrupt("invalid firmware version string") }
        var header = UpdateImageHeader(architecture: arch, firmwareVersion: fw, payloadLength: payloadLength,
                                       payloadSHA512: sha, keyID: keyID)
        header.formatVersion = version
        return (header, length)
    }
}

/// What a board accepts: its trusted keys, its architecture, the size cap, and whether unsigned images are allowed
/// (development boards only).
public struct ImagePolicy: Sendable {
    public var keysDirectory: String
    public var allowUnsigned: Bool
    public var architecture: String
    public var maxImageBytes: Int64

    public init(keysDirectory: String, allowUnsigned: Bool = false,
                architecture: String = UpdateImage.hostArchitecture, maxImageBytes: Int64 = 64 << 20) {
        self.keysDirectory = keysDirectory
        self.allowUnsigned = allowUnsigned
        self.architecture = architecture
        self.maxImageBytes = maxImageBytes
    }
}

/// An image file whose header, signature, size and payload hash have all been checked.
public struct VerifiedImage: Equatable, Sendable {
    public var path: String
    public var header: UpdateImageHeader
    public var payloadOffset: Int64
    /// The id (hex) of the key that signed it, or nil for an unsigned image accepted on a development board.
    public var signedBy: String?
}

public enum UpdateImage {
    public static var hostArchitecture: String {
        #if arch(arm64)
        return "aarch64"
        #elseif arch(arm)
        return "armv7"
        #elseif arch(x86_64)
        return "x86_64"
        #else
        return "unknown"
        #endif
    }

    public static let architectures = ["aarch64", "armv7", "x86_64"]

    /// Builds an image; `secretKey` nil makes an unsigned image (accepted only by boards that allow them).
    public static func build(payload: [UInt8], firmwareVersion: String, architecture: String,
                             secretKey: [UInt8]?) throws -> [UInt8] {
        guard UpdateImageHeader.isValidVersion(firmwareVersion) else {
            throw UpdateError("bad_version", "version '\(firmwareVersion)' may only use letters, digits and . _ + -")
        }
        guard architectures.contains(architecture) else {
            throw UpdateError("bad_architecture", "architecture must be one of \(architectures.joined(separator: ", "))")
        }
        var header = UpdateImageHeader(architecture: architecture, firmwareVersion: firmwareVersion,
                                       payloadLength: UInt64(payload.count), payloadSHA512: Crypto.sha512(payload))
        var signature = [UInt8](repeating: 0, count: Ed25519.signatureBytes)
        if let secretKey {
            guard secretKey.count == Ed25519.secretKeyBytes else { throw UpdateError("bad_key", "secret key length") }
            header.keyID = Ed25519.keyID(publicKey: Ed25519.publicKey(fromSecretKey: secretKey))
            signature = Ed25519.sign(header.encode(), secretKey: secretKey)
        }
        return header.encode() + signature + payload
    }

    /// Checks an image file completely before anything is installed from it. Each refusal says why.
    public static func verify(path: String, policy: ImagePolicy,
                              log: (String) -> Void = { _ in }) throws -> VerifiedImage {
        guard let fileSize = FileIO.fileSize(path) else { throw UpdateError.io("stat", path, errno: errno) }
        guard fileSize <= policy.maxImageBytes else {
            throw UpdateError("image_too_large", "the image is \(fileSize) bytes; the limit is \(policy.maxImageBytes)")
        }
        let fd = try FileIO.openFile(path, O_RDONLY)
        defer { close(fd) }
        let head = try FileIO.readUpTo(fd, UpdateImageHeader.maxHeaderLength + Ed25519.signatureBytes, path: path)
        let (header, headerLength) = try UpdateImageHeader.decode(head)
        guard head.count >= headerLength + Ed25519.signatureBytes else {
            throw UpdateError("image_truncated", "the image ends inside its signature")
        }
        let signedBytes = Array(head[0..<headerLength])
        let signature = Array(head[headerLength..<headerLength + Ed25519.signatureBytes])

        var signedBy: String?
        if header.isUnsigned && signature.allSatisfy({ $0 == 0 }) {
            guard policy.allowUnsigned else {
                throw UpdateError("unsigned_image",
                                  "the image is not signed and this board only accepts signed images")
            }
            log("WARNING: installing an UNSIGNED image (version \(header.firmwareVersion)) because unsigned images "
                + "are allowed on this board; never allow this on boards in the field")
        } else {
            let keys = SigningKeys.loadTrustedKeys(directory: policy.keysDirectory, log: log)
            guard !keys.isEmpty else {
                throw UpdateError("no_keys", "no public keys are installed in \(policy.keysDirectory), "
                                  + "so no signed image can be checked")
            }
            guard let key = keys.first(where: { $0.id == header.keyID }) else {
                throw UpdateError("unknown_key", "the image is signed with key \(Crypto.hex(header.keyID)), "
                                  + "which is not installed in \(policy.keysDirectory)")
            }
            guard Ed25519.verify(signature: signature, message: signedBytes, publicKey: key.bytes) else {
                throw UpdateError("bad_signature", "the image's signature does not match key \(key.idHex) "
                                  + "(the image was altered or signed with another key)")
            }
            signedBy = key.idHex
        }

        guard header.architecture == policy.architecture else {
            throw UpdateError("wrong_architecture", "the image is for \(header.architecture) but this board is "
                              + "\(policy.architecture)")
        }
        let payloadOffset = Int64(headerLength + Ed25519.signatureBytes)
        let expected = payloadOffset + Int64(clamping: header.payloadLength)
        guard expected <= policy.maxImageBytes else {
            throw UpdateError("image_too_large", "the image declares \(expected) bytes; the limit is "
                              + "\(policy.maxImageBytes)")
        }
        guard fileSize >= expected else {
            throw UpdateError("image_truncated", "the image is \(fileSize) bytes but should be \(expected) "
                              + "(incomplete download or upload)")
        }
        guard fileSize == expected else {
            throw UpdateError("bad_image", "the image has \(fileSize - expected) unexpected bytes after its payload")
        }
        guard lseek(fd, off_t(payloadOffset), SEEK_SET) == off_t(payloadOffset) else {
            throw UpdateError.io("seek", path, errno: errno)
        }
        var hasher = SHA512Hasher()
        var remaining = Int64(header.payloadLength)
        while remaining > 0 {
            let chunk = try FileIO.readUpTo(fd, Int(min(remaining, 1 << 16)), path: path)
            guard !chunk.isEmpty else { throw UpdateError("image_truncated", "the image shrank while being read") }
            hasher.update(chunk)
            remaining -= Int64(chunk.count)
        }
        guard hasher.finalize() == header.payloadSHA512 else {
            throw UpdateError("payload_mismatch", "the payload does not match the SHA-512 in the signed header "
                              + "(corrupted image)")
        }
        return VerifiedImage(path: path, header: header, payloadOffset: payloadOffset, signedBy: signedBy)
    }
}
