import NIOCore
import NIOHTTP1

/// One HTTP/1.1 connection's life without I/O: what arrived, what the client has drained, which timer runs, and
/// when to read, deliver the next request part, or close. The model is NIO's `HTTPServerPipelineHandler`
/// (one request at a time, further pipelined parts buffered, reading paused while a reply is outstanding),
/// bounded for hostile clients:
///
/// - reading stops while a request is being answered, while the channel is not writable (the client is not
///   draining its replies) and while parts of later requests wait; at most `maxQueuedRequests` requests and
///   `maxQueuedBytes` bytes of them are kept, the first one over is answered `busy` (after the ones before it)
///   and the connection closes;
/// - the head of a request (and a small body, see `bodyHasDeadline()`) must be complete within `headTimeout` of its
///   first byte, however slowly it trickles (slowloris); a larger body that stalls for `idleTimeout`, or a connection that cannot get rid of its replies for
///   `writeTimeout`, is closed; an idle keep-alive connection closes silently after `idleTimeout`.
///
/// The executor (`APIHTTPHandler`) feeds events, pulls parts with `next()` (one at a time: processing a part may
/// feed further events, e.g. an early reply), and after every batch performs `settle()`'s actions.
struct HTTPConnectionMachine {
    struct Limits: Sendable, Equatable {
        var maxQueuedRequests = 128
        var maxQueuedBytes = 64 * 1024
        /// Requests answered in one turn of the event loop before the connection yields to the others: a client
        /// that pipelines hundreds of requests in one read does not hold up everybody else.
        var maxRequestsPerTurn = 16
        var idleTimeout: TimeAmount = .seconds(10)
        var headTimeout: TimeAmount = .seconds(10)
        var writeTimeout: TimeAmount = .seconds(10)
        var lingerTime: TimeAmount = .seconds(1)
    }

    enum Timer: Equatable, Sendable {
        /// Keep-alive connection without a request: closed silently.
        case idle
        /// A request head has begun: it must be complete by then (408).
        case head
        /// A body in progress: nothing arrived for `idleTimeout` (408).
        case body
        /// Replies cannot be handed to the client: closed.
        case write
        /// The output is closed; the client's remaining input is swallowed so it can read the reply, then closed.
        case linger
    }

    /// Replies the machine decides itself; every one closes the connection.
    enum Reply: Equatable, Sendable {
        case timeout(HTTPRequestHead?)
        case badRequest
        /// Too many pipelined requests wait for their replies to be read.
        case busy
    }

    enum Delivery: Equatable {
        case part(HTTPServerRequestPart)
        case reply(Reply)
    }

    enum Action: Equatable {
        /// Forward the channel's `read()`.
        case read
        case setTimer(Timer, TimeAmount)
        case cancelTimer
        /// Once every reply written so far has been flushed, close the output (then report `outputClosed()`).
        case closeOutputWhenFlushed
        case close
        /// Let the event loop serve other connections, then report `nextTurn()`.
        case yieldTurn
    }

    private enum Inbound {
        /// `cost`: what it counts against `maxQueuedBytes` (0 for parts of the request being received).
        case part(HTTPServerRequestPart, cost: Int)
        case parseError
    }

    private enum Request: Equatable {
        /// `bytesSeen`: the next head has begun arriving.
        case waitingForHead(bytesSeen: Bool)
        /// `answered`: a reply went out before the end (the rest of the body is discarded).
        case receiving(head: HTTPRequestHead, answered: Bool)
        /// The whole request was delivered; its reply is outstanding.
        case answering
    }

    private enum Life: Equatable {
        case open
        case closing(outputClosed: Bool)
        case closed
    }

    let limits: Limits
    private var request = Request.waitingForHead(bytesSeen: false)
    private var life = Life.open
    private var queue = CircularBuffer<Inbound>()
    private var queuedRequests = 0
    private var queuedBytes = 0
    private var overflowed = false
    private var writable = true
    private var readPending = false
    private var pendingReply: Reply?
    private var armed: Timer?
    private var rearm = false
    private var closeOutputEmitted = false
    private var closeEmitted = false
    /// The request being received has a small body that must arrive within the head's deadline too.
    private var deadlineCoversBody = false
    private var requestsThisTurn = 0
    private var yieldNeeded = false
    private var yielding = false
    /// Issue 18: when the last request answered by the fast path (`repeatedRequest(now:)`) arrived. The idle timer
    /// is not rescheduled per request: when it fires, it is re-armed for what is left of the idle time since then.
    private var lastRepeatedRequest: NIODeadline?
    /// The next idle timer runs this long instead of `idleTimeout` (the rest of an idle period that a fast-path
    /// request began).
    private var idleRemainder: TimeAmount?
    /// Every request this connection received: heads the decoder delivered plus the fast path's repeats.
    private(set) var requestCount = 0

    init(limits: Limits) {
        self.limits = limits
    }

    // MARK: events

    /// Bytes reached the socket, before the decoder made anything of them.
    mutating func bytesArrived() {
        switch request {
        case .waitingForHead(bytesSeen: false) where queue.isEmpty:
            request = .waitingForHead(bytesSeen: true)
        case .receiving where !deadlineCoversBody:
            rearm = true  // the body is still moving
        default:
            break
        }
    }

    /// A part from the decoder.
    mutating func received(_ part: HTTPServerRequestPart) {
        guard life == .open, !overflowed else { return }
        // Parts of the request being received pass straight through; only later requests count against the caps.
        if case .receiving = request, queue.isEmpty, !part.isHead {
            queue.append(.part(part, cost: 0))
            return
        }
        let size = part.approximateSize
        if part.isHead && queuedRequests + 1 > limits.maxQueuedRequests || queuedBytes + size > limits.maxQueuedBytes {
            overflowed = true
            return
        }
        if part.isHead { queuedRequests += 1 }
        queuedBytes += size
        queue.append(.part(part, cost: size))
    }

    /// The decoder gave up: answered 400 in order, after the requests before it.
    mutating func parseError() {
        guard life == .open, !overflowed else { return }
        queue.append(.parseError)
    }

    /// The request layer: this request's body is small (an `/api` command): the whole request must be complete
    /// within `headTimeout` of its first byte, however slowly the body trickles. Larger bodies (uploads) only
    /// must not stall.
    mutating func bodyHasDeadline() {
        if case .receiving = request { deadlineCoversBody = true }
    }

    /// The request layer wrote the complete reply to the request it was given.
    mutating func answered(keepAlive: Bool) {
        guard life == .open else { return }
        guard keepAlive else {
            beginClosing(reply: nil)
            return
        }
        switch request {
        case .receiving(let head, _):
            request = .receiving(head: head, answered: true)
        case .answering:
            request = .waitingForHead(bytesSeen: false)
        case .waitingForHead:
            break
        }
    }

    mutating func writabilityChanged(_ isWritable: Bool) {
        writable = isWritable
    }

    /// The channel asks to read; granted by `settle()` when the connection can take more input.
    mutating func readRequested() {
        readPending = true
    }

    /// - Parameter now: the time the timer ran; with it, an idle timer that a fast-path request has made early is
    ///   re-armed for the rest of the idle time instead of closing.
    mutating func timerFired(_ timer: Timer, now: NIODeadline? = nil) {
        guard timer == armed else { return }  // a timer replaced after it was due
        armed = nil
        if timer == .idle, let now, let last = lastRepeatedRequest, now < last + limits.idleTimeout {
            idleRemainder = last + limits.idleTimeout - now
            return  // `settle()` arms it again
        }
        switch timer {
        case .idle, .write, .linger:
            life = .closed
        case .head, .body:
            if case .receiving(let head, _) = request {
                beginClosing(reply: .timeout(head))
            } else {
                beginClosing(reply: .timeout(nil))
            }
        }
    }

    /// The output was closed after the last reply went out.
    mutating func outputClosed() {
        if case .closing = life { life = .closing(outputClosed: true) }
    }

    /// A read cycle ended, or the connection's yielded turn came back: a new turn begins.
    mutating func nextTurn() {
        requestsThisTurn = 0
        yielding = false
    }

    /// Issue 18: a read brought exactly the bytes of the last request the fast path may repeat (APIHTTPHandler's
    /// `RepeatedRequest`). True: the connection is at a request boundary (nothing received, queued or
    /// outstanding, the client drains its replies, this turn has room) and the request is counted as received and
    /// answered (keep-alive) at once — the executor writes its reply. False: nothing changed, the bytes go through the
    /// decoder and the normal path as any other bytes.
    mutating func repeatedRequest(now: NIODeadline) -> Bool {
        guard isAtRequestBoundary, requestsThisTurn < limits.maxRequestsPerTurn else { return false }
        requestsThisTurn += 1
        requestCount += 1
        lastRepeatedRequest = now
        return true
    }

    /// Nothing received, queued or outstanding, the connection open and writable: a request that arrives now is the
    /// next one to be answered.
    var isAtRequestBoundary: Bool {
        guard life == .open, !overflowed, writable, pendingReply == nil, queue.isEmpty,
              case .waitingForHead(bytesSeen: false) = request else { return false }
        return true
    }

    mutating func inactive() {
        life = .closed
        closeEmitted = true
        queue.removeAll()
    }

    private mutating func beginClosing(reply: Reply?) {
        guard life == .open else { return }
        life = .closing(outputClosed: false)
        pendingReply = reply
        queue.removeAll()
        queuedRequests = 0
        queuedBytes = 0
    }

    // MARK: pulling parts

    /// The next part for the request layer, or a reply the machine decided; nil when nothing can go on now.
    mutating func next() -> Delivery? {
        if let reply = pendingReply {
            pendingReply = nil
            return .reply(reply)
        }
        guard life == .open else { return nil }
        while true {
            switch request {
            case .waitingForHead:
                guard writable else { return nil }
                if requestsThisTurn >= limits.maxRequestsPerTurn, !queue.isEmpty {
                    yieldNeeded = true
                    return nil
                }
                guard let first = queue.first else {
                    if overflowed {
                        beginClosing(reply: nil)
                        return .reply(.busy)
                    }
                    return nil
                }
                dequeue()
                switch first {
                case .part(.head(let head), _):
                    requestsThisTurn += 1
                    requestCount += 1
                    deadlineCoversBody = false
                    request = .receiving(head: head, answered: false)
                    return .part(.head(head))
                case .part, .parseError:
                    beginClosing(reply: nil)
                    return .reply(.badRequest)
                }
            case .receiving(_, let answered):
                guard let first = queue.first else { return nil }
                dequeue()
                switch first {
                case .part(.body(let chunk), _):
                    if answered { continue }
                    return .part(.body(chunk))
                case .part(.end(let trailers), _):
                    if answered {
                        request = .waitingForHead(bytesSeen: false)
                        continue
                    }
                    request = .answering
                    return .part(.end(trailers))
                case .part(.head, _), .parseError:
                    beginClosing(reply: nil)
                    return .reply(.badRequest)
                }
            case .answering:
                return nil
            }
        }
    }

    private mutating func dequeue() {
        guard let first = queue.popFirst() else { return }
        if case .part(let part, let cost) = first, cost > 0 {
            if part.isHead { queuedRequests -= 1 }
            queuedBytes -= cost
        }
    }

    // MARK: settling

    /// Timer, reading and closing after a batch of events.
    mutating func settle() -> ActionList {
        var actions = ActionList()
        if life == .closed {
            if armed != nil {
                armed = nil
                actions.append(.cancelTimer)
            }
            if !closeEmitted {
                closeEmitted = true
                actions.append(.close)
            }
            return actions
        }
        if case .closing = life, !closeOutputEmitted, pendingReply == nil {
            closeOutputEmitted = true
            actions.append(.closeOutputWhenFlushed)
        }
        let wanted = wantedTimer
        if wanted != armed || (rearm && wanted != nil) {
            armed = wanted
            if let wanted {
                let after = wanted == .idle ? idleRemainder ?? duration(wanted) : duration(wanted)
                actions.append(.setTimer(wanted, after))
            } else {
                actions.append(.cancelTimer)
            }
        }
        idleRemainder = nil
        rearm = false
        if yieldNeeded && !yielding {
            yielding = true
            actions.append(.yieldTurn)
        }
        yieldNeeded = false
        if readPending && canRead {
            readPending = false
            actions.append(.read)
        }
        return actions
    }

    private var wantedTimer: Timer? {
        switch life {
        case .closed: return nil
        case .closing(outputClosed: true): return .linger
        case .closing(outputClosed: false): return .write
        case .open: break
        }
        if !writable { return .write }
        switch request {
        case .waitingForHead(bytesSeen: false): return queue.isEmpty ? .idle : nil
        case .waitingForHead(bytesSeen: true): return .head
        case .receiving: return deadlineCoversBody ? .head : .body
        case .answering: return nil
        }
    }

    private func duration(_ timer: Timer) -> TimeAmount {
        switch timer {
        case .idle, .body: return limits.idleTimeout
        case .head: return limits.headTimeout
        case .write: return limits.writeTimeout
        case .linger: return limits.lingerTime
        }
    }

    /// More input only when it can be used at once: nothing queued, the client drains its replies, no reply
    /// outstanding. While closing, input is read and discarded so the client can read its last reply.
    private var canRead: Bool {
        switch life {
        case .closed: return false
        case .closing: return true
        case .open: break
        }
        guard writable, queue.isEmpty, !overflowed else { return false }
        if case .answering = request { return false }
        return true
    }

    // MARK: for tests

    var isClosing: Bool { if case .closing = life { return true } else { return false } }
    var isClosed: Bool { life == .closed }
    var queuedRequestCount: Int { queuedRequests }
}

extension HTTPConnectionMachine {
    /// What `settle()` asks for: at most four actions (close or close-output, a timer, a yield, a read), kept inline
    /// so that settling after every read allocates nothing (issue 18: no allocation per request).
    struct ActionList: Sequence, Equatable, ExpressibleByArrayLiteral, CustomStringConvertible {
        private var slots: (Action?, Action?, Action?, Action?) = (nil, nil, nil, nil)
        private(set) var count = 0

        init() {}

        init(arrayLiteral elements: Action...) {
            for e in elements { append(e) }
        }

        mutating func append(_ action: Action) {
            switch count {
            case 0: slots.0 = action
            case 1: slots.1 = action
            case 2: slots.2 = action
            case 3: slots.3 = action
            default: preconditionFailure("settle() emits at most four actions")
            }
            count += 1
        }

        subscript(_ i: Int) -> Action {
            switch i {
            case 0: return slots.0!
            case 1: return slots.1!
            case 2: return slots.2!
            default: return slots.3!
            }
        }

        var isEmpty: Bool { count == 0 }

        struct Iterator: IteratorProtocol {
            let list: ActionList
            var index = 0
            mutating func next() -> Action? {
                guard index < list.count else { return nil }
                defer { index += 1 }
                return list[index]
            }
        }

        func makeIterator() -> Iterator { Iterator(list: self) }

        static func == (a: ActionList, b: ActionList) -> Bool { a.count == b.count && a.elementsEqual(b) }

        var description: String { "\(Array(self))" }
    }
}

extension HTTPServerRequestPart {
    var isHead: Bool { if case .head = self { return true } else { return false } }

    /// What the part costs to keep: the bytes it came as, roughly.
    var approximateSize: Int {
        switch self {
        case .head(let head):
            return head.uri.utf8.count + 16 + head.headers.reduce(0) { $0 + $1.name.utf8.count + $1.value.utf8.count + 4 }
        case .body(let chunk):
            return chunk.readableBytes
        case .end:
            return 8
        }
    }
}
