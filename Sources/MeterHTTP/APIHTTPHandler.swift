import Dispatch
import FoundationEssentials
import Glibc
import MeterService
import NIOCore
import NIOHTTP1
import Synchronization

/// Bytes reached the connection (fired by `ByteTapHandler` before the decoder sees them): a request head has
/// begun, or a body is still moving.
struct BytesArrived {}

/// First in the pipeline: tells the connection handler that bytes arrived, before the decoder made anything of them.
/// Issue 18: also the fast path — a read that brings exactly the bytes of the last request this connection answered
/// with a pre-encoded response is answered by the connection handler at once (`RepeatedRequest`), without the decoder.
final class ByteTapHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    /// The connection's handler (it sets itself when added).
    weak var api: APIHTTPHandler?

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = Self.unwrapInboundIn(data)
        guard let api else {
            if bytes.readableBytes > 0 { context.fireUserInboundEventTriggered(BytesArrived()) }
            context.fireChannelRead(data)
            return
        }
        if api.answerRepeated(bytes) { return }
        api.readBegan(bytes)
        if bytes.readableBytes > 0 { context.fireUserInboundEventTriggered(BytesArrived()) }
        context.fireChannelRead(data)
        api.readEnded()
    }
}

/// Settings the HTTP handler needs (a subset of `APIServer.Configuration`).
struct HTTPHandlerSettings: Sendable {
    var maxBodyBytes: Int
    /// After an error reply that closes the connection, how long to discard what the client still sends so
    /// it can read the reply (closing with unread input would reset the connection and lose the reply).
    var lingerTime: TimeAmount
    var access: AccessSettings = .strict
    /// nil: `/ota` and `/ota.html` are 404 like any unknown path.
    var upload: UploadSettings? = nil
    /// Extra read-only GET paths (`APIServer.Configuration.getRoutes`).
    var getRoutes: [String: GetRoute] = [:]
    /// Timeouts and per-connection caps (`lingerTime` above wins over the one in here).
    var limits = HTTPConnectionMachine.Limits()
    /// Complete `meter_reading` responses per reading (issue 18); nil: every request is dispatched.
    var preEncoded: PreEncodedReplies? = nil
    /// The set-up page's script and style and the read-only `/javascript/` route (StaticFiles.swift); nil: 404.
    var staticFiles: StaticFiles? = nil
    let staticCache = StaticFileCache()
    /// Issue 16: `GET /metrics` and the reply counter; nil: `/metrics` is 404.
    var metrics: MetricsRoute? = nil
    /// Runs a reply's `afterReply` (restart, factory reset: they may block) off the event loop.
    var runAfterReply: @Sendable (@escaping @Sendable () -> Void) -> Void = { work in afterReplyQueue.async(execute: work) }

    var connectionLimits: HTTPConnectionMachine.Limits {
        var l = limits
        l.lingerTime = lingerTime
        return l
    }
}

/// What a `GetRoute` answered.
struct GetReply: Sendable {
    var status: Int, contentType: String, body: [UInt8]
    init(_ status: Int, _ contentType: String, _ body: [UInt8]) { (self.status, self.contentType, self.body) = (status, contentType, body) }
}

/// One at a time, in order: a factory reset that waits for the WiFi never holds up the event loop.
let afterReplyQueue = DispatchQueue(label: "meterext.http.after-reply")
/// Static-file lookups (StaticFiles.swift): realpath, stat and a first read stay off the event loops.
let staticFileQueue = DispatchQueue(label: "meterext.http.static-files")

/// `UploadRoute` as the handler uses it, plus the server-wide slot.
struct UploadSettings: Sendable {
    var page: ByteBuffer
    var maxBodyBytes: Int
    var receive: @Sendable ([UInt8]) async -> (status: Int, text: String)
    var slot: UploadSlot

    init(_ route: UploadRoute, slot: UploadSlot = UploadSlot()) {
        page = ByteBuffer(string: route.pageHTML)
        maxBodyBytes = route.maxBodyBytes
        receive = route.receive
        self.slot = slot
    }
}

/// One upload at a time per server: an upload is held in memory until it has been handed on, so this keeps the
/// memory bound at one `maxBodyBytes` however many clients upload at once (the updater takes one image at a
/// time anyway).
final class UploadSlot: Sendable {
    private let taken = Atomic<Bool>(false)
    init() {}
    func acquire() -> Bool { taken.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged }
    func release() { taken.store(false, ordering: .releasing) }
}

/// The thin executor: feeds socket events to the connection's `HTTPConnectionMachine`, performs its actions, and
/// answers the parts it hands over (routes, bodies, the dispatcher, the upload hook).
///
/// One request at a time per connection: while an async command runs, further (pipelined) requests wait in the
/// machine and reading is paused, so replies leave in request order.
final class APIHTTPHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    enum Route: Equatable {
        case api
        /// `GET /api`: what a browser opens; answered like `{"cmd":"meter_reading"}`.
        case apiReading
        case setupPage
        case health
        case uploadPage
        case upload
        /// Issue 16: `GET /metrics`.
        case metrics
        /// One of `HTTPHandlerSettings.getRoutes`.
        case extraGet(String)
        case notFound
        case methodNotAllowed(allow: String)
        /// StaticFiles.swift: the page's script and style, `/javascript/…`.
        case staticFile
    }

    /// The request the machine handed over, while its parts arrive.
    private struct Current {
        var head: HTTPRequestHead
        var route: Route
        var body: ByteBuffer?
    }

    private let dispatcher: CommandDispatcher
    private let setupPage: ByteBuffer
    private let settings: HTTPHandlerSettings
    private var machine: HTTPConnectionMachine
    private var current: Current?
    /// An async command or upload is running; its completion answers.
    private var awaiting = false
    /// The body of a `POST /ota` being collected (outside `current`, so appending never copies it).
    private var uploadBytes: [UInt8] = []
    private var holdsUploadSlot = false
    private var timer: (task: Scheduled<Void>, generation: Int)?
    private var timerGeneration = 0
    private var lastWrite: EventLoopFuture<Void>?
    private var pumping = false
    private var pumpAgain = false
    private var settling = false
    private var settleAgain = false
    /// The context of the first handler (`ByteTapHandler`): a pre-encoded response (already HTTP bytes) is written
    /// from there, past `HTTPResponseEncoder`.
    private var rawContext: ChannelHandlerContext?
    /// Issue 18: the request this connection may answer again without the decoder (see `ByteTapHandler`).
    private var repeated = RepeatedRequest()
    /// Requests the fast path answered (for tests).
    private(set) var repeatedAnswers = 0
    /// Every request the connection machine counted (for tests).
    var requestCount: Int { machine.requestCount }

    init(dispatcher: CommandDispatcher, setupPage: ByteBuffer, settings: HTTPHandlerSettings) {
        self.dispatcher = dispatcher
        self.setupPage = setupPage
        self.settings = settings
        self.machine = HTTPConnectionMachine(limits: settings.connectionLimits)
    }

    // MARK: events in

    func channelActive(context: ChannelHandlerContext) {
        machine.writabilityChanged(context.channel.isWritable)
        settle(context)
        context.fireChannelActive()
    }

    func handlerAdded(context: ChannelHandlerContext) {
        rawContext = try? context.pipeline.syncOperations.context(handlerType: ByteTapHandler.self)
        (try? context.pipeline.syncOperations.handler(type: ByteTapHandler.self))?.api = self
        if context.channel.isActive { settle(context) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = Self.unwrapInboundIn(data)
        repeated.decoded(part)
        machine.received(part)
        pump(context)
    }

    // MARK: the fast path (issue 18)

    /// `bytes` (one read) are exactly the last request answered from `PreEncodedReplies` and the connection is at a
    /// request boundary: writes the current pre-encoded response (shared buffer, no promise) and counts the request
    /// in the machine. False: nothing happened, the bytes go through the decoder.
    func answerRepeated(_ bytes: ByteBuffer) -> Bool {
        guard let replies = settings.preEncoded, let raw = rawContext, repeated.matches(bytes),
              let response = repeated.response(for: replies.version(), lookup: { replies.lookup($0, version: $1) }),
              machine.repeatedRequest(now: .now())
        else { return false }
        raw.writeAndFlush(NIOAny(response), promise: nil)
        repeatedAnswers &+= 1
        settings.metrics?.countResponse(200)  // issue 16: HTTP requests by status (only 200s are pre-encoded)
        return true
    }

    /// A read goes through the decoder now (`ByteTapHandler`).
    func readBegan(_ bytes: ByteBuffer) {
        repeated.readBegan(bytes, machineAtBoundary: machine.isAtRequestBoundary)
    }

    /// The decoder and the request layer are done with the read.
    func readEnded() {
        repeated.readEnded()
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        machine.nextTurn()
        pump(context)
        context.fireChannelReadComplete()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is BytesArrived {
            machine.bytesArrived()
            settle(context)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        machine.writabilityChanged(context.channel.isWritable)
        pump(context)
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        machine.readRequested()
        settle(context)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if error is HTTPParserError {
            repeated.parseFailed()
            machine.parseError()
            pump(context)
        } else {
            context.close(promise: nil)
        }
    }

    // A running upload task still holds its bytes: its completion releases the slot, not the closing connection.
    func channelInactive(context: ChannelHandlerContext) {
        machine.inactive()
        cancelTimer()
        if !awaiting { releaseUploadSlot() }
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        cancelTimer()
        if !awaiting { releaseUploadSlot() }
    }

    private func timerFired(_ kind: HTTPConnectionMachine.Timer, generation: Int, context: ChannelHandlerContext) {
        guard timer?.generation == generation else { return }
        timer = nil
        machine.timerFired(kind, now: .now())
        pump(context)
    }

    // MARK: actions out

    /// Hands every part the machine releases to the request layer, then settles timers, reading and closing.
    /// Processing a part may write a reply and feed the machine again (re-entrant calls only ask for one more round).
    private func pump(_ context: ChannelHandlerContext) {
        if pumping {
            pumpAgain = true
            return
        }
        pumping = true
        repeat {
            pumpAgain = false
            while let delivery = machine.next() {
                switch delivery {
                case .part(let part): process(part, context: context)
                case .reply(let reply): writeMachineReply(reply, context: context)
                }
            }
        } while pumpAgain
        pumping = false
        settle(context)
    }

    /// Performs the machine's actions. An action may complete at once and feed the machine again (a flush that is
    /// already done closes the output): that only asks for another round, so no stale action runs after a newer one.
    private func settle(_ context: ChannelHandlerContext) {
        if settling {
            settleAgain = true
            return
        }
        settling = true
        repeat {
            settleAgain = false
            for action in machine.settle() { perform(action, context: context) }
        } while settleAgain
        settling = false
    }

    private func perform(_ action: HTTPConnectionMachine.Action, context: ChannelHandlerContext) {
        switch action {
        case .read:
            context.read()
        case .setTimer(let kind, let after):
            cancelTimer()
            timerGeneration += 1
            let generation = timerGeneration
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            let task = context.eventLoop.scheduleTask(in: after) {
                let (handler, context) = loopBound.value
                handler.timerFired(kind, generation: generation, context: context)
            }
            timer = (task, generation)
        case .cancelTimer:
            cancelTimer()
        case .closeOutputWhenFlushed:
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            let flushed = lastWrite ?? context.eventLoop.makeSucceededVoidFuture()
            flushed.whenComplete { _ in
                let context = loopBound.value.1
                guard context.channel.isActive else { return }
                context.close(mode: .output).whenComplete { result in
                    let (handler, context) = loopBound.value
                    if case .failure = result { context.close(promise: nil); return }
                    handler.machine.outputClosed()
                    handler.settle(context)
                }
            }
        case .close:
            context.close(promise: nil)
        case .yieldTurn:
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            context.eventLoop.execute {
                let (handler, context) = loopBound.value
                handler.machine.nextTurn()
                handler.pump(context)
            }
        }
    }

    private func cancelTimer() {
        timer?.task.cancel()
        timer = nil
    }

    // MARK: the request layer

    private func process(_ part: HTTPServerRequestPart, context: ChannelHandlerContext) {
        switch part {
        case .head(let head):
            begin(head, context: context)
        case .body(var chunk):
            guard var request = current else { return }
            if request.route == .upload {
                if uploadBytes.count + chunk.readableBytes > settings.upload!.maxBodyBytes {
                    rejectBodyTooLarge(head: request.head, route: .upload, context: context)
                    return
                }
                uploadBytes.append(contentsOf: chunk.readableBytesView)
                return
            }
            guard request.body != nil else { return }  // routes without a body: discard
            if request.body!.readableBytes + chunk.readableBytes > settings.maxBodyBytes {
                rejectBodyTooLarge(head: request.head, route: request.route, context: context)
                return
            }
            current = nil  // avoid a copy-on-write of the body while appending
            request.body!.writeBuffer(&chunk)
            current = request
        case .end:
            guard let request = current else { return }
            current = nil
            respond(request, context: context)
        }
    }

    private func begin(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        var route = Self.route(head, uploads: settings.upload != nil)
        // Issue 16: `/metrics` only when the gateway wired it.
        if settings.metrics != nil, route == .notFound, head.uri.split(separator: "?").first == "/metrics" {
            route = head.method == .GET || head.method == .HEAD ? .metrics : .methodNotAllowed(allow: "GET, HEAD")
        }
        if route == .notFound, head.method == .GET || head.method == .HEAD,
           let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init), settings.getRoutes[path] != nil {
            route = .extraGet(path)
        }
        // Static files (StaticFiles.swift): only paths no other route answers.
        if route == .notFound, let files = settings.staticFiles, files.resolve(path: StaticFiles.path(of: head.uri)) != .notStatic {
            route = .staticFile
        }
        let length = head.headers.first(name: "content-length").flatMap { Int($0) }
        if route == .upload, let upload = settings.upload {
            // Before anything is read: a refused or second upload must not cost 64 MiB of memory.
            let request = settings.access.requestContext(peer: context.channel.remoteAddress, local: context.channel.localAddress,
                                                         headers: head.headers)
            if let refusal = request.browserRefusal {
                writeText(HTTPResponseStatus(statusCode: refusal.code.httpStatus), refusal.message, head: head,
                          keepAlive: false, context: context)
                return
            }
            guard settings.access.authorizer.permitsChange(request) else {
                writeText(.unauthorized, CommandAuthorizer.refusalMessage, head: head, keepAlive: false, context: context)
                return
            }
            if let length, length > upload.maxBodyBytes {
                rejectBodyTooLarge(head: head, route: route, context: context)
                return
            }
            guard upload.slot.acquire() else {
                writeText(.serviceUnavailable, "another upload is in progress; try again when it has finished",
                          head: head, keepAlive: false, extraHeaders: [("retry-after", "10")], context: context)
                return
            }
            holdsUploadSlot = true
            uploadBytes = []
            uploadBytes.reserveCapacity(length ?? 0)
        }
        if route == .api, let length, length > settings.maxBodyBytes {
            rejectBodyTooLarge(head: head, route: route, context: context)
            return
        }
        if route != .upload { machine.bodyHasDeadline() }
        if Self.takesBody(route),
           head.headers[canonicalForm: "expect"].contains(where: { $0.lowercased() == "100-continue" }) {
            context.writeAndFlush(Self.wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .continue))),
                                  promise: nil)
        }
        let body: ByteBuffer? = route == .api ? context.channel.allocator.buffer(capacity: 0) : nil
        current = Current(head: head, route: route, body: body)
    }

    static func route(_ head: HTTPRequestHead, uploads: Bool) -> Route {
        let path = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? head.uri
        if uploads && UploadRoute.paths.contains(path) {
            switch head.method {
            case .GET, .HEAD: return .uploadPage
            case .POST: return .upload
            default: return .methodNotAllowed(allow: "GET, HEAD, POST")
            }
        }
        switch path {
        case "/api":
            switch head.method {
            case .POST: return .api
            case .GET, .HEAD: return .apiReading
            default: return .methodNotAllowed(allow: "GET, HEAD, POST")
            }
        case "/", "/index.html":
            return head.method == .GET || head.method == .HEAD ? .setupPage : .methodNotAllowed(allow: "GET, HEAD")
        case "/healthz":
            return head.method == .GET || head.method == .HEAD ? .health : .methodNotAllowed(allow: "GET, HEAD")
        default:
            return .notFound
        }
    }

    /// Issue 18: this request was answered with a pre-encoded response; if it came as one read on its own,
    /// `RepeatedRequest` remembers it.
    private func learn(_ request: Current, response: ByteBuffer, version: ReadingVersion) {
        guard repeated.isReading else { return }
        let key = request.route == .apiReading ? Self.readingBody : request.body.map { Array($0.readableBytesView) } ?? []
        repeated.answeredPreEncoded(key: key, response: response, version: version)
    }

    static func takesBody(_ route: Route) -> Bool { route == .api || route == .upload }

    static let readingBody = Array(#"{"cmd":"meter_reading"}"#.utf8)

    private func respond(_ request: Current, context: ChannelHandlerContext) {
        let head = request.head
        let keepAlive = head.isKeepAlive
        let headOnly = head.method == .HEAD
        switch request.route {
        case .api, .apiReading:
            // Issue 18: the hot path. An identical `meter_reading` request while the reading is unchanged gets the
            // same complete response (head and body in one buffer), without parsing or encoding anything.
            let cacheable = settings.preEncoded != nil && rawContext != nil && keepAlive && !headOnly
                && head.version == .http1_1
            var version: ReadingVersion? = nil
            if cacheable, let replies = settings.preEncoded {
                let current = replies.version()
                let hit = request.route == .apiReading
                    ? replies.lookup(Self.readingBody, version: current)
                    : request.body.flatMap { body in replies.lookup(body, version: current) }
                if let hit {
                    learn(request, response: hit, version: current)
                    writePreEncoded(hit, status: 200, keepAlive: keepAlive, context: context)  // only 200s are kept
                    return
                }
                version = current
            }
            let bytes = request.route == .apiReading ? Self.readingBody : request.body.map { Array($0.readableBytesView) } ?? []
            let sender = settings.access.requestContext(peer: context.channel.remoteAddress, local: context.channel.localAddress,
                                                         headers: head.headers)
            switch dispatcher.dispatch(body: bytes, context: sender, authorizer: settings.access.authorizer) {
            case .reply(let response):
                if let version, let replies = settings.preEncoded, response.afterReply == nil, response.status == 200,
                   replies.isCacheable(request: bytes, authorizer: settings.access.authorizer) {
                    let full = replies.store(request: bytes, version: version, status: response.status, body: response.body)
                    learn(request, response: full, version: version)
                    writePreEncoded(full, status: response.status, keepAlive: keepAlive, context: context)
                    return
                }
                write(response, head: head, keepAlive: keepAlive, context: context)
                machine.answered(keepAlive: keepAlive)
            case .pending(let work):
                awaiting = true
                let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
                context.eventLoop.makeFutureWithTask(work).whenComplete { result in
                    let (handler, context) = loopBound.value
                    handler.awaiting = false
                    let response: APIResponse
                    switch result {
                    case .success(let r): response = r
                    case .failure: response = ReplyEncoder.errorResponse(.internalError, "the command failed")
                    }
                    handler.write(response, head: head, keepAlive: keepAlive, context: context)
                    handler.machine.answered(keepAlive: keepAlive)
                    handler.pump(context)
                }
            }
        case .setupPage:
            writeRaw(status: .ok, contentType: "text/html; charset=utf-8", body: setupPage, version: head.version,
                     keepAlive: keepAlive, headOnly: headOnly, extraHeaders: StaticFiles.pageSecurityHeaders, context: context)
            machine.answered(keepAlive: keepAlive)
        case .staticFile:
            // StaticFiles.swift decides; a 304 carries the file's length but no body. The lookup may touch the disk
            // (realpath, stat, the first read of a library file): it runs on staticFileQueue, never on the event loop.
            guard let files = settings.staticFiles else {
                writeError(.notFound, "no such path: use POST /api", head: head, keepAlive: keepAlive, context: context)
                machine.answered(keepAlive: keepAlive)
                break
            }
            let cache = settings.staticCache, path = StaticFiles.path(of: head.uri)
            awaiting = true
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            let promise = context.eventLoop.makePromise(of: StaticReply?.self)
            staticFileQueue.async { promise.succeed(files.reply(path: path, head: head, cache: cache)) }
            promise.futureResult.whenSuccess { reply in
                let (handler, context) = loopBound.value
                handler.awaiting = false
                if let reply {
                    handler.writeRaw(status: reply.status, contentType: reply.contentType, body: reply.body,
                                     version: head.version, keepAlive: keepAlive,
                                     headOnly: headOnly || reply.status == .notModified,
                                     extraHeaders: reply.headers, context: context)
                } else {
                    handler.writeError(.notFound, "no such path: use POST /api", head: head, keepAlive: keepAlive,
                                       context: context)
                }
                handler.machine.answered(keepAlive: keepAlive)
                handler.pump(context)
            }
        case .health:
            write(dispatcher.health(), head: head, keepAlive: keepAlive, context: context)
            machine.answered(keepAlive: keepAlive)
        case .uploadPage:
            writeRaw(status: .ok, contentType: "text/html; charset=utf-8", body: settings.upload!.page,
                     version: head.version, keepAlive: keepAlive, headOnly: headOnly, context: context)
            machine.answered(keepAlive: keepAlive)
        case .upload:
            let bytes = uploadBytes
            uploadBytes = []  // the task's copy is now the only one
            let receive = settings.upload!.receive
            awaiting = true
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            context.eventLoop.makeFutureWithTask { await receive(bytes) }.whenComplete { result in
                let (handler, context) = loopBound.value
                handler.awaiting = false
                handler.releaseUploadSlot()
                switch result {
                case .success(let reply):
                    handler.writeText(HTTPResponseStatus(statusCode: reply.status), reply.text, head: head,
                                      keepAlive: keepAlive, context: context)
                case .failure:
                    handler.writeText(.internalServerError, "the upload could not be processed", head: head,
                                      keepAlive: keepAlive, context: context)
                }
                handler.machine.answered(keepAlive: keepAlive)
                handler.pump(context)
            }
        case .metrics:
            // Issue 16: Prometheus text, rendered from the snapshots in memory.
            let route = settings.metrics!
            writeRaw(status: .ok, contentType: route.contentType, body: ByteBuffer(bytes: route.render()),
                     version: head.version, keepAlive: keepAlive, headOnly: headOnly, context: context)
            machine.answered(keepAlive: keepAlive)
        case .extraGet(let path):
            let answer = settings.getRoutes[path]!.answer
            let query = head.uri.split(separator: "?", maxSplits: 1).dropFirst().first.map(String.init) ?? ""
            awaiting = true
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            let work: @Sendable () async -> GetReply = { let r = await answer(query); return GetReply(r.status, r.contentType, r.body) }
            context.eventLoop.makeFutureWithTask(work).whenComplete { result in
                let (handler, context) = loopBound.value
                handler.awaiting = false
                let reply = (try? result.get()) ?? GetReply(500, "text/plain; charset=utf-8", Array("internal error\n".utf8))
                handler.writeRaw(status: HTTPResponseStatus(statusCode: reply.status), contentType: reply.contentType,
                                 body: context.channel.allocator.buffer(bytes: reply.body), version: head.version,
                                 keepAlive: keepAlive, headOnly: headOnly, context: context)
                handler.machine.answered(keepAlive: keepAlive)
                handler.pump(context)
            }
        case .notFound:
            writeError(.notFound, "no such path: use POST /api", head: head, keepAlive: keepAlive, context: context)
            machine.answered(keepAlive: keepAlive)
        case .methodNotAllowed(let allow):
            writeError(.methodNotAllowed, "method \(head.method.rawValue) is not allowed here; use \(allow)", head: head,
                       keepAlive: keepAlive, extraHeaders: [("allow", allow)], context: context)
            machine.answered(keepAlive: keepAlive)
        }
    }

    // MARK: errors

    /// Answers and closes: the rest of the body is not read.
    private func rejectBodyTooLarge(head: HTTPRequestHead, route: Route, context: ChannelHandlerContext) {
        current = nil
        if route == .upload, let upload = settings.upload {
            releaseUploadSlot()
            writeText(.payloadTooLarge, "the upload is larger than the limit of \(upload.maxBodyBytes) bytes",
                      head: head, keepAlive: false, context: context)
            return
        }
        writeError(.bodyTooLarge, "the request body is larger than \(settings.maxBodyBytes) bytes", head: head,
                   keepAlive: false, context: context)
    }

    private func writeMachineReply(_ reply: HTTPConnectionMachine.Reply, context: ChannelHandlerContext) {
        current = nil
        if !awaiting { releaseUploadSlot() }
        switch reply {
        case .timeout(let head):
            writeError(.requestTimeout, "the request was not completed in time", head: head, keepAlive: false,
                       context: context)
        case .badRequest:
            writeError(.badRequest, "the request is not valid HTTP/1.1", head: nil, keepAlive: false, context: context)
        case .busy:
            let limits = settings.connectionLimits
            writeError(.busy, "more than \(limits.maxQueuedRequests) requests (or \(limits.maxQueuedBytes) bytes) are "
                       + "waiting on this connection for their replies to be read: read the replies before sending "
                       + "more requests", head: nil, keepAlive: false, extraHeaders: [("retry-after", "1")],
                       context: context)
        }
    }

    /// Frees the upload's memory and lets the next upload in. Idempotent.
    private func releaseUploadSlot() {
        uploadBytes = []
        if holdsUploadSlot {
            holdsUploadSlot = false
            settings.upload?.slot.release()
        }
    }

    // MARK: writing replies

    /// A complete pre-encoded response (issue 18), written past `HTTPResponseEncoder`; counted like every reply.
    private func writePreEncoded(_ response: ByteBuffer, status: Int, keepAlive: Bool, context: ChannelHandlerContext) {
        let written = context.eventLoop.makePromise(of: Void.self)
        rawContext!.writeAndFlush(NIOAny(response), promise: written)
        lastWrite = written.futureResult
        settings.metrics?.countResponse(status)  // issue 16: HTTP requests by status
        machine.answered(keepAlive: keepAlive)
    }

    /// A reply that closes the connection tells the machine so (`answered(keepAlive: false)`), whoever wrote it.
    private func write(_ response: APIResponse, head: HTTPRequestHead?, keepAlive: Bool, context: ChannelHandlerContext) {
        var buffer = context.channel.allocator.buffer(capacity: response.body.count)
        buffer.writeBytes(response.body)
        writeRaw(status: HTTPResponseStatus(statusCode: response.status), contentType: "application/json",
                 body: buffer, version: head?.version ?? .http1_1, keepAlive: keepAlive, headOnly: head?.method == .HEAD,
                 afterReply: response.afterReply, context: context)
    }

    private func writeText(_ status: HTTPResponseStatus, _ text: String, head: HTTPRequestHead?, keepAlive: Bool,
                           extraHeaders: [(String, String)] = [], context: ChannelHandlerContext) {
        writeRaw(status: status, contentType: "text/plain; charset=utf-8",
                 body: ByteBuffer(string: text), version: head?.version ?? .http1_1, keepAlive: keepAlive,
                 headOnly: head?.method == .HEAD, extraHeaders: extraHeaders, context: context)
    }

    private func writeError(_ code: APIErrorCode, _ message: String, head: HTTPRequestHead?, keepAlive: Bool,
                            extraHeaders: [(String, String)] = [], context: ChannelHandlerContext) {
        let body = ReplyEncoder.errorBody(code: code, message: message)
        var buffer = context.channel.allocator.buffer(capacity: body.count)
        buffer.writeBytes(body)
        writeRaw(status: HTTPResponseStatus(statusCode: code.httpStatus), contentType: "application/json", body: buffer,
                 version: head?.version ?? .http1_1, keepAlive: keepAlive, headOnly: head?.method == .HEAD,
                 extraHeaders: extraHeaders, context: context)
    }

    private func writeRaw(status: HTTPResponseStatus, contentType: String, body: ByteBuffer, version: HTTPVersion,
                          keepAlive: Bool, headOnly: Bool, extraHeaders: [(String, String)] = [],
                          afterReply: (@Sendable () -> Void)? = nil, context: ChannelHandlerContext) {
        settings.metrics?.countResponse(Int(status.code))  // issue 16: HTTP requests by status
        var headers = HTTPHeaders()
        headers.reserveCapacity(4 + extraHeaders.count)
        headers.add(name: "content-type", value: contentType)
        headers.add(name: "content-length", value: String(body.readableBytes))
        if !keepAlive {
            headers.add(name: "connection", value: "close")
        } else if version.major == 1 && version.minor == 0 {
            headers.add(name: "connection", value: "keep-alive")
        }
        // RFC 9110: a 401 says which scheme would work.
        if status == .unauthorized { headers.add(name: "www-authenticate", value: "Bearer") }
        for (name, value) in extraHeaders { headers.add(name: name, value: value) }
        context.write(Self.wrapOutboundOut(.head(HTTPResponseHead(version: version, status: status, headers: headers))),
                      promise: nil)
        if !headOnly && body.readableBytes > 0 {
            context.write(Self.wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        }
        let written = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(Self.wrapOutboundOut(.end(nil)), promise: written)
        lastWrite = written.futureResult
        if let afterReply {
            // Only once the reply is on its way (a restart must not cut off its own "OK"), and off the event loop:
            // a factory reset waits for the WiFi, which can take half a minute.
            let run = settings.runAfterReply
            written.futureResult.whenSuccess { run(afterReply) }
        }
        if !keepAlive { machine.answered(keepAlive: false) }
    }
}

/// Over a connection cap: answer 503 and close, without parsing anything.
final class RejectConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = HTTPServerResponsePart
    let lingerTime: TimeAmount
    let verdict: ConnectionLimiter.Verdict
    init(lingerTime: TimeAmount, verdict: ConnectionLimiter.Verdict = .serverFull) {
        self.lingerTime = lingerTime
        self.verdict = verdict
    }

    func channelActive(context: ChannelHandlerContext) {
        let message = verdict == .peerFull
            ? "too many connections from your address; close some and try again"
            : "too many connections; try again shortly"
        let body = ReplyEncoder.errorBody(code: .tooManyConnections, message: message)
        var buffer = context.channel.allocator.buffer(capacity: body.count)
        buffer.writeBytes(body)
        let headers = HTTPHeaders([("content-type", "application/json"), ("content-length", String(body.count)),
                                   ("connection", "close"), ("retry-after", "1")])
        context.write(Self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .serviceUnavailable,
                                                                 headers: headers))), promise: nil)
        context.write(Self.wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        let channel = context.channel
        let linger = lingerTime
        context.writeAndFlush(Self.wrapOutboundOut(.end(nil))).whenComplete { _ in
            guard channel.isActive else { return }
            channel.close(mode: .output, promise: nil)
            channel.eventLoop.scheduleTask(in: linger) { channel.close(promise: nil) }
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}  // discard

    func errorCaught(context: ChannelHandlerContext, error: Error) { context.close(promise: nil) }
}

/// Issue 18: complete `meter_reading` responses (status line, headers and body in one `ByteBuffer`), one per distinct
/// request body, valid for one `ReadingVersion`. Built on the first request after a new reading from the
/// dispatcher's own reply, so the bytes are the ones the dispatcher and `HTTPResponseEncoder` would write; written
/// to the socket as they are (a reference-counted buffer: no copy, no encoding) for every identical request until
/// the reading changes. Only keep-alive HTTP/1.1 requests that are not HEAD take this path; everything else (other
/// commands, protected commands, errors, HTTP/1.0, `Connection: close`) goes through the dispatcher as before.
final class PreEncodedReplies: Sendable {
    struct Entry {
        var request: [UInt8]
        var version: ReadingVersion
        var response: ByteBuffer
    }

    /// Distinct request bodies kept (clients that send their own `id`); the oldest is replaced.
    static let capacity = 8
    let version: @Sendable () -> ReadingVersion
    private let entries = Mutex<[Entry]>([])

    init(version: @escaping @Sendable () -> ReadingVersion) {
        self.version = version
    }

    var count: Int { entries.withLock { $0.count } }

    func lookup(_ request: ByteBuffer, version: ReadingVersion) -> ByteBuffer? {
        request.withUnsafeReadableBytes { bytes in lookup(bytes, version: version) }
    }

    func lookup(_ request: [UInt8], version: ReadingVersion) -> ByteBuffer? {
        request.withUnsafeBytes { bytes in lookup(bytes, version: version) }
    }

    private func lookup(_ request: UnsafeRawBufferPointer, version: ReadingVersion) -> ByteBuffer? {
        entries.withLock { list in
            for entry in list where entry.version == version && entry.request.count == request.count {
                let same = entry.request.withUnsafeBytes { stored in
                    request.count == 0 || memcmp(stored.baseAddress!, request.baseAddress!, request.count) == 0
                }
                if same { return entry.response }
            }
            return nil
        }
    }

    /// The request is `meter_reading` (decoded by the same JSON decoder as the dispatcher's, so a body the
    /// dispatcher reads as another command never lands here) and that command needs no token: the reply then
    /// depends on the request's bytes and the reading only, not on who sent it.
    func isCacheable(request: [UInt8], authorizer: CommandAuthorizer) -> Bool {
        struct Command: Decodable { var cmd: String }
        guard !authorizer.protectedCommands.contains("meter_reading"),
              let command = try? JSONDecoder().decode(Command.self, from: Data(request)) else { return false }
        return command.cmd == "meter_reading"
    }

    func store(request: [UInt8], version: ReadingVersion, status: Int, body: [UInt8]) -> ByteBuffer {
        let response = Self.encode(status: HTTPResponseStatus(statusCode: status), body: body)
        entries.withLock { list in
            list.removeAll { $0.request == request || $0.version != version }
            if list.count >= Self.capacity { list.removeFirst() }
            list.append(Entry(request: request, version: version, response: response))
        }
        return response
    }

    /// What `APIHTTPHandler.writeRaw` and NIO's `HTTPResponseEncoder` write for a keep-alive HTTP/1.1 JSON reply.
    static func encode(status: HTTPResponseStatus, body: [UInt8]) -> ByteBuffer {
        let head = "HTTP/1.1 \(status.code) \(status.reasonPhrase)\r\ncontent-type: application/json\r\n"
            + "content-length: \(body.count)\r\n\r\n"
        var buffer = ByteBufferAllocator().buffer(capacity: head.utf8.count + body.count)
        buffer.writeString(head)
        buffer.writeBytes(body)
        return buffer
    }
}
