import MeterService
import NIOCore
import NIOHTTP1
import Synchronization

/// What one connection shares between the byte-level activity tracker and the HTTP handler.
/// Both run on the channel's event loop.
final class ConnectionActivity {
    /// Bytes arrived since the last complete request: a stall now means a half-sent request (408), not an
    /// idle keep-alive connection (closed silently).
    var pendingBytes = false
}

/// First in the pipeline: notes that request bytes arrived, before the decoder has made anything of them.
final class ByteActivityHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    let activity: ConnectionActivity
    init(activity: ConnectionActivity) { self.activity = activity }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if Self.unwrapInboundIn(data).readableBytes > 0 { activity.pendingBytes = true }
        context.fireChannelRead(data)
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
}

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

/// The thin adapter: routes, collects the body, hands it to the dispatcher, writes the reply.
///
/// One request at a time per connection: while an async command runs, further (pipelined) requests are queued
/// and reading is paused, so replies leave in request order.
final class APIHTTPHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    enum Route {
        case api
        case setupPage
        case health
        case uploadPage
        case upload
        case notFound
        case methodNotAllowed(allow: String)
    }

    enum State {
        case idle
        case collecting(head: HTTPRequestHead, route: Route, body: ByteBuffer?)
        /// An async command is running.
        case awaitingReply
        /// An error reply was sent with `connection: close`; discard input until the connection closes.
        case draining
    }

    private let dispatcher: CommandDispatcher
    private let setupPage: ByteBuffer
    private let settings: HTTPHandlerSettings
    private let activity: ConnectionActivity
    private var state = State.idle
    private var queued = CircularBuffer<HTTPServerRequestPart>()
    private var readSuppressed = false
    /// The body of a `POST /ota` being collected (outside `state`, so appending never copies it).
    private var uploadBytes: [UInt8] = []
    private var holdsUploadSlot = false

    init(dispatcher: CommandDispatcher, setupPage: ByteBuffer, settings: HTTPHandlerSettings, activity: ConnectionActivity) {
        self.dispatcher = dispatcher
        self.setupPage = setupPage
        self.settings = settings
        self.activity = activity
    }

    // MARK: inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = Self.unwrapInboundIn(data)
        if case .awaitingReply = state {
            queued.append(part)
            return
        }
        process(part, context: context)
    }

    private func process(_ part: HTTPServerRequestPart, context: ChannelHandlerContext) {
        switch (state, part) {
        case (.draining, _):
            return
        case (.idle, .head(let head)):
            let route = Self.route(head, uploads: settings.upload != nil)
            let length = head.headers.first(name: "content-length").flatMap { Int($0) }
            if case .upload = route {
                // Before anything is read: a refused or second upload must not cost 64 MiB of memory.
                let request = settings.access.requestContext(peer: context.channel.remoteAddress, headers: head.headers)
                guard settings.access.authorizer.permitsChange(request) else {
                    writeText(.unauthorized, CommandAuthorizer.refusalMessage, head: head,
                              keepAlive: false, context: context)
                    return
                }
                if let length, length > settings.upload!.maxBodyBytes {
                    rejectBodyTooLarge(head: head, route: route, context: context)
                    return
                }
                guard settings.upload!.slot.acquire() else {
                    writeText(.serviceUnavailable,
                              "another upload is in progress; try again when it has finished", head: head,
                              keepAlive: false, extraHeaders: [("retry-after", "10")], context: context)
                    return
                }
                holdsUploadSlot = true
                uploadBytes = []
                uploadBytes.reserveCapacity(length ?? 0)
            }
            if case .api = route, let length, length > settings.maxBodyBytes {
                rejectBodyTooLarge(head: head, route: route, context: context)
                return
            }
            if Self.takesBody(route),
               head.headers[canonicalForm: "expect"].contains(where: { $0.lowercased() == "100-continue" }) {
                context.writeAndFlush(Self.wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .continue))),
                                      promise: nil)
            }
            let body: ByteBuffer? = { if case .api = route { return context.channel.allocator.buffer(capacity: 0) } else { return nil } }()
            state = .collecting(head: head, route: route, body: body)
        case (.collecting(let head, .upload, _), .body(let chunk)):
            if uploadBytes.count + chunk.readableBytes > settings.upload!.maxBodyBytes {
                rejectBodyTooLarge(head: head, route: .upload, context: context)
                return
            }
            uploadBytes.append(contentsOf: chunk.readableBytesView)
        case (.collecting(let head, let route, var body), .body(var chunk)):
            guard body != nil else { return }  // routes without a body: discard
            if body!.readableBytes + chunk.readableBytes > settings.maxBodyBytes {
                rejectBodyTooLarge(head: head, route: route, context: context)
                return
            }
            state = .idle  // avoid a copy-on-write of `body` while appending
            body!.writeBuffer(&chunk)
            state = .collecting(head: head, route: route, body: body)
        case (.collecting(let head, let route, let body), .end):
            activity.pendingBytes = false
            state = .idle
            respond(head: head, route: route, body: body, context: context)
        default:
            // A part out of order cannot come from NIO's decoder; treat it as a broken connection.
            context.close(promise: nil)
        }
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
            return head.method == .POST ? .api : .methodNotAllowed(allow: "POST")
        case "/", "/index.html":
            return head.method == .GET || head.method == .HEAD ? .setupPage : .methodNotAllowed(allow: "GET, HEAD")
        case "/healthz":
            return head.method == .GET || head.method == .HEAD ? .health : .methodNotAllowed(allow: "GET, HEAD")
        default:
            return .notFound
        }
    }

    static func takesBody(_ route: Route) -> Bool {
        switch route {
        case .api, .upload: return true
        default: return false
        }
    }

    private func respond(head: HTTPRequestHead, route: Route, body: ByteBuffer?, context: ChannelHandlerContext) {
        let keepAlive = head.isKeepAlive
        let headOnly = head.method == .HEAD
        switch route {
        case .api:
            let bytes = body.map { Array($0.readableBytesView) } ?? []
            let request = settings.access.requestContext(peer: context.channel.remoteAddress, headers: head.headers)
            switch dispatcher.dispatch(body: bytes, context: request, authorizer: settings.access.authorizer) {
            case .reply(let response):
                write(response, head: head, keepAlive: keepAlive, context: context)
            case .pending(let work):
                state = .awaitingReply
                let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
                context.eventLoop.makeFutureWithTask(work).whenComplete { result in
                    let (handler, context) = loopBound.value
                    handler.state = .idle
                    let response: APIResponse
                    switch result {
                    case .success(let r): response = r
                    case .failure: response = ReplyEncoder.errorResponse(.internalError, "the command failed")
                    }
                    handler.write(response, head: head, keepAlive: keepAlive, context: context)
                    handler.drainQueue(context: context)
                }
            }
        case .setupPage:
            writeRaw(status: .ok, contentType: "text/html; charset=utf-8", body: setupPage, version: head.version,
                     keepAlive: keepAlive, headOnly: headOnly, context: context)
        case .health:
            write(dispatcher.health(), head: head, keepAlive: keepAlive, context: context)
        case .uploadPage:
            writeRaw(status: .ok, contentType: "text/html; charset=utf-8", body: settings.upload!.page,
                     version: head.version, keepAlive: keepAlive, headOnly: headOnly, context: context)
        case .upload:
            let bytes = uploadBytes
            uploadBytes = []  // the task's copy is now the only one
            let receive = settings.upload!.receive
            state = .awaitingReply
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            context.eventLoop.makeFutureWithTask { await receive(bytes) }.whenComplete { result in
                let (handler, context) = loopBound.value
                handler.state = .idle
                handler.releaseUploadSlot()
                switch result {
                case .success(let reply):
                    handler.writeText(HTTPResponseStatus(statusCode: reply.status), reply.text, head: head,
                                      keepAlive: keepAlive, context: context)
                case .failure:
                    handler.writeText(.internalServerError, "the upload could not be processed", head: head,
                                      keepAlive: keepAlive, context: context)
                }
                handler.drainQueue(context: context)
            }
        case .notFound:
            writeError(.notFound, "no such path: use POST /api", head: head, keepAlive: keepAlive, context: context)
        case .methodNotAllowed(let allow):
            writeError(.methodNotAllowed, "method \(head.method.rawValue) is not allowed here; use \(allow)", head: head,
                       keepAlive: keepAlive, extraHeaders: [("allow", allow)], context: context)
        }
    }

    private func drainQueue(context: ChannelHandlerContext) {
        while canProcessQueued, let part = queued.popFirst() {
            process(part, context: context)
        }
        if readSuppressed, !isAwaiting {
            readSuppressed = false
            context.read()
        }
    }

    private var canProcessQueued: Bool {
        switch state {
        case .idle, .collecting: return true
        case .awaitingReply, .draining: return false
        }
    }

    private var isAwaiting: Bool { if case .awaitingReply = state { return true } else { return false } }

    // MARK: errors and timeouts

    private func rejectBodyTooLarge(head: HTTPRequestHead, route: Route, context: ChannelHandlerContext) {
        if case .upload = route, let upload = settings.upload {
            releaseUploadSlot()
            writeText(.payloadTooLarge,
                      "the upload is larger than the limit of \(upload.maxBodyBytes) bytes", head: head,
                      keepAlive: false, context: context)
            return
        }
        writeError(.bodyTooLarge, "the request body is larger than \(settings.maxBodyBytes) bytes", head: head,
                   keepAlive: false, context: context)
    }

    /// Frees the upload's memory and lets the next upload in. Idempotent.
    private func releaseUploadSlot() {
        uploadBytes = []
        if holdsUploadSlot {
            holdsUploadSlot = false
            settings.upload?.slot.release()
        }
    }

    // A running upload task still holds its bytes: its completion releases the slot, not the closing connection.
    func channelInactive(context: ChannelHandlerContext) {
        if !isAwaiting { releaseUploadSlot() }
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        if !isAwaiting { releaseUploadSlot() }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard let idle = event as? IdleStateHandler.IdleStateEvent, idle == .read else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        switch state {
        case .awaitingReply:
            return  // reading is paused on purpose; the command is bounded by the meter link
        case .collecting(let head, _, _):
            writeError(.requestTimeout, "the request was not completed in time", head: head, keepAlive: false,
                       context: context)
        case .idle where activity.pendingBytes:
            writeError(.requestTimeout, "the request was not completed in time", head: nil, keepAlive: false,
                       context: context)
        case .idle, .draining:
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        switch state {
        case .idle, .collecting:
            if error is HTTPParserError {
                writeError(.badRequest, "the request is not valid HTTP/1.1", head: nil, keepAlive: false, context: context)
                return
            }
        case .awaitingReply, .draining:
            break
        }
        context.close(promise: nil)
    }

    // MARK: outbound

    func read(context: ChannelHandlerContext) {
        if isAwaiting {
            readSuppressed = true
        } else {
            context.read()
        }
    }

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
        if let afterReply {
            // Only once the reply is on its way: a restart must not cut off its own "OK".
            written.futureResult.whenSuccess { afterReply() }
        }
        if !keepAlive {
            closeAfterReply(written.futureResult, context: context)
        }
    }

    /// Half-closes after the reply, discards what the client still sends for `lingerTime`, then closes.
    private func closeAfterReply(_ written: EventLoopFuture<Void>, context: ChannelHandlerContext) {
        state = .draining
        queued.removeAll()
        releaseUploadSlot()
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        let linger = settings.lingerTime
        written.whenComplete { _ in
            let context = loopBound.value
            let channel = context.channel
            guard channel.isActive else { return }
            context.close(mode: .output, promise: nil)
            context.eventLoop.scheduleTask(in: linger) { channel.close(promise: nil) }
        }
        if readSuppressed {
            readSuppressed = false
            context.read()
        }
    }
}

/// Over the connection cap: answer 503 and close, without parsing anything.
final class RejectConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = HTTPServerResponsePart
    let lingerTime: TimeAmount
    init(lingerTime: TimeAmount) { self.lingerTime = lingerTime }

    func channelActive(context: ChannelHandlerContext) {
        let body = ReplyEncoder.errorBody(code: .tooManyConnections, message: "too many connections; try again shortly")
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
