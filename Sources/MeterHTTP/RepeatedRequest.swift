import Glibc
import MeterService
import NIOCore
import NIOHTTP1

/// Issue 18: recognises a read that brings exactly the bytes of the last request this connection answered from
/// `PreEncodedReplies`, so the same pre-encoded response can be written again without handing the bytes to NIO's
/// HTTP decoder. No I/O: `APIHTTPHandler` feeds it what happened to each read.
///
/// This writes no HTTP of its own: NIO parsed the request once and the normal path answered it; here identical bytes
/// are only recognised again. It is sound because:
/// - it learns only from a read that was, from a request boundary, exactly one complete request: the decoder
///   delivered one head, its body and its end, the head is plain CRLF lines up to the first empty line and the body
///   fills the rest of the read to its last byte (so the decoder holds nothing afterwards), and the request has no
///   `Transfer-Encoding`, `Expect` or `Upgrade` (which the normal path answers differently or which stop the decoder);
/// - it learns only when the normal path answered that request, within the same read that began with nothing queued
///   or outstanding (so the answer is this read's request's), with a pre-encoded response
///   (a keep-alive HTTP/1.1 `meter_reading` that needs no token: its reply depends on the bytes and the reading only);
/// - any other read that goes through the decoder, unless it is again exactly one complete request from a boundary,
///   forgets what was learnt (the decoder may hold a partial request now);
/// - the executor answers a match only when the connection machine agrees (`repeatedRequest(now:)`: nothing pending,
///   writable) and the response for the current reading version is known (`response(for:)`).
struct RepeatedRequest {
    /// What was learnt: the request's bytes, the key `PreEncodedReplies` knows it by, its response and version.
    struct Learnt {
        var request: [UInt8]
        var key: [UInt8]
        var response: ByteBuffer
        var version: ReadingVersion
    }

    private(set) var learnt: Learnt?
    /// The decoder holds no partial request: true at the start and after a read that was exactly one request.
    private(set) var atBoundary = true

    // The read being decoded.
    private var read: ByteBuffer?
    private var heads = 0
    private var ends = 0
    private var bodyBytes = 0
    private var lastWasEnd = false
    private var plainHead = false
    private var answered: (key: [UInt8], response: ByteBuffer, version: ReadingVersion)?

    /// True when `bytes` are exactly the learnt request's.
    func matches(_ bytes: ByteBuffer) -> Bool {
        guard let learnt, learnt.request.count == bytes.readableBytes else { return false }
        return bytes.withUnsafeReadableBytes { read in
            learnt.request.withUnsafeBytes { known in
                known.count == 0 || memcmp(read.baseAddress!, known.baseAddress!, known.count) == 0
            }
        }
    }

    /// The response to repeat for the reading `current`; after a new reading, the one another request stored for
    /// it (`lookup`), kept for the next time. Nil: the normal path must answer (it stores the new response).
    mutating func response(for current: ReadingVersion, lookup: ([UInt8], ReadingVersion) -> ByteBuffer?) -> ByteBuffer? {
        guard var learnt else { return nil }
        if learnt.version == current { return learnt.response }
        guard let fresh = lookup(learnt.key, current) else { return nil }
        self.learnt = nil  // no copy-on-write of the request bytes
        learnt.response = fresh
        learnt.version = current
        self.learnt = learnt
        return fresh
    }

    // MARK: a read through the normal path

    /// Whether the request answered during the read can only be the read's own (nothing was queued or outstanding
    /// when it began).
    private var answersAreThisRead = false

    /// The bytes go to the decoder now; `machineAtBoundary`: the connection machine had nothing queued or
    /// outstanding (`HTTPConnectionMachine.isAtRequestBoundary`), so a request answered during this read is this
    /// read's.
    mutating func readBegan(_ bytes: ByteBuffer, machineAtBoundary: Bool) {
        read = bytes
        answersAreThisRead = machineAtBoundary
        heads = 0
        ends = 0
        bodyBytes = 0
        lastWasEnd = false
        plainHead = false
        answered = nil
    }

    /// A part the decoder delivered during this read.
    mutating func decoded(_ part: HTTPServerRequestPart) {
        switch part {
        case .head(let head):
            heads += 1
            plainHead = !head.headers.contains(name: "transfer-encoding") && !head.headers.contains(name: "expect")
                && !head.headers.contains(name: "upgrade") && head.method != .CONNECT
        case .body(let chunk):
            bodyBytes += chunk.readableBytes
        case .end(let trailers):
            ends += 1
            if trailers != nil { plainHead = false }
        }
        lastWasEnd = part.isEnd
    }

    /// A read is being decoded and may still teach a request.
    var isReading: Bool { read != nil && answersAreThisRead }

    /// The decoder failed on this read.
    mutating func parseFailed() {
        heads = 2  // never learnable
    }

    /// The normal path answered the request of this read with this pre-encoded response.
    mutating func answeredPreEncoded(key: [UInt8], response: ByteBuffer, version: ReadingVersion) {
        guard read != nil, answersAreThisRead else { return }
        answered = (key, response, version)
    }

    /// The decoder is done with the read.
    mutating func readEnded() {
        guard let bytes = read else { return }
        read = nil
        atBoundary = atBoundary && heads == 1 && ends == 1 && lastWasEnd && plainHead
            && Self.isOneRequest(bytes, bodyBytes: bodyBytes)
        if !atBoundary {
            learnt = nil
        } else if let answered {
            learnt = Learnt(request: Array(bytes.readableBytesView), key: answered.key, response: answered.response,
                            version: answered.version)
        }
        self.answered = nil
    }

    /// The bytes are one request head of CRLF-terminated lines up to the first empty line, followed by exactly
    /// `bodyBytes` bytes: a parser that starts at a request boundary ends exactly at the last byte.
    static func isOneRequest(_ bytes: ByteBuffer, bodyBytes: Int) -> Bool {
        bytes.withUnsafeReadableBytes { b in
            guard let first = b.first, first != UInt8(ascii: "\r"), first != UInt8(ascii: "\n") else { return false }
            var i = 0
            while i + 3 < b.count {
                if b[i + 1] == UInt8(ascii: "\n") && b[i] != UInt8(ascii: "\r") { return false }
                if b[i] == UInt8(ascii: "\r") && b[i + 1] == UInt8(ascii: "\n") && b[i + 2] == UInt8(ascii: "\r")
                    && b[i + 3] == UInt8(ascii: "\n") {
                    return i + 4 + bodyBytes == b.count
                }
                i += 1
            }
            return false
        }
    }
}

extension HTTPServerRequestPart {
    var isEnd: Bool { if case .end = self { return true } else { return false } }
}
