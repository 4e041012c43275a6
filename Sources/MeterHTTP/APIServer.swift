import MeterService
import Platform
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// The HTTP/1.1 server: `POST /api`, `GET /` (set-up page), `GET /healthz`, and with `Configuration.upload`
/// the browser upload at `/ota` and `/ota.html`.
///
/// Commands that change the board (`CommandAuthorizer.protectedCommands`) and `POST /ota` run without
/// credentials only from loopback; a client that reached the board on the open set-up access point's address may
/// also run the set-up commands (`CommandAuthorizer.setupCommands`); anyone else sends
/// `Authorization: Bearer <token>` or gets 401 and the command does not run.
///
/// ```swift
/// let server = APIServer(configuration: try .init(listen: "0.0.0.0:80"), dispatcher: api.dispatcher(),
///                        setupPageHTML: SetupPage.html)
/// let address = try await server.start()   // bound; send READY=1 now (or use `server.ready`)
/// // watchdog: if server.isAlive(within: .seconds(5)) { send WATCHDOG=1 }
/// try await server.stop()
/// ```
public final class APIServer: Sendable {
    public struct Configuration: Sendable {
        public var host: String
        /// 0 picks a free port; read it from `start()`'s result or `localPort`.
        public var port: Int
        /// Larger bodies get 413 and the connection is closed.
        public var maxBodyBytes: Int = 16 * 1024
        /// A connection that sends nothing for this long is closed; 408 when a request was half-sent.
        public var idleTimeout: TimeAmount = .seconds(10)
        /// Connections beyond this get 503 at once.
        public var maxConnections: Int = 256
        /// Connections from one address (an IPv6 /64 counts as one) beyond this get 503 at once, so one client
        /// cannot take every slot. Loopback and the set-up access point are no exception.
        public var maxConnectionsPerPeer: Int = 32
        /// A request head must be complete within this time of its first byte, however slowly it trickles (408).
        public var headTimeout: TimeAmount = .seconds(10)
        /// A connection whose replies are not read for this long is closed.
        public var writeTimeout: TimeAmount = .seconds(10)
        /// Pipelined requests (and their bytes) kept per connection while earlier replies wait to be read; the
        /// first one over gets 503 `busy` and the connection closes.
        public var maxQueuedRequests: Int = 128
        public var maxQueuedBytes: Int = 64 * 1024
        /// How long a connection that is being closed after an error reply still swallows input.
        public var lingerTime: TimeAmount = .seconds(1)
        /// How often the event loop refreshes the liveness timestamp.
        public var livenessInterval: TimeAmount = .seconds(1)
        public var backlog: Int32 = 256
        /// Event loop threads of the private group (`--http-threads`); nil: one per core this process may run on
        /// (`System.coreCount` narrowed by the CPU affinity mask, `UsableCPUs`).
        public var eventLoops: Int? = nil

        // MARK: who may change the board

        /// False: every command is open to everyone (strict MeterExtension #1 compatibility).
        public var tokenRequired: Bool = true
        /// Checks a presented bearer token (the state store's constant-time compare). The default accepts none.
        public var tokenIsValid: @Sendable (String) -> Bool = { _ in false }
        /// "The connection was accepted on this *local* address, which is the set-up access point's own address, and
        /// the access point is open now" (trust by the interface the request arrived on, not the client's source
        /// address). Such clients may run `CommandAuthorizer.setupCommands` without the token. Called on the event
        /// loop for each protected request: it must answer from memory, without blocking.
        public var arrivedOnOpenSetupAccessPoint: @Sendable (SocketAddress) -> Bool = { _ in false }
        /// The commands that need the token from other peers.
        public var protectedCommands: Set<String> = CommandAuthorizer.protectedCommands
        /// Which names a request that changes the board may use in `Host`, besides IP literals (see `BrowserPolicy`).
        public var browser = BrowserPolicy()

        /// The browser upload page and `POST /ota`; nil: those paths are 404.
        public var upload: UploadRoute? = nil
        /// Extra read-only `GET` paths (issue 15: `/history.csv`); open to everyone like `meter_reading`.
        public var getRoutes: [String: GetRoute] = [:]

        /// The set-up page's script and style, and Debian's /usr/share/javascript read-only at `/javascript/` (the
        /// dashboard's chart library); see StaticFiles.swift. nil: those paths are 404.
        public var staticFiles: StaticFiles? = StaticFiles()
        /// Issue 16: `GET /metrics` (Prometheus text) and a count of every reply by status; nil: `/metrics` is 404.
        public var metrics: MetricsRoute? = nil

        /// Issue 18: what `meter_reading`'s reply depends on (`MeterAPI.meterReadingVersion`). When set, a complete
        /// response (head and body in one buffer) is kept per request body and reading, and an identical request is
        /// answered with it until the reading changes; nil: every request goes through the dispatcher.
        public var meterReadingVersion: (@Sendable () -> ReadingVersion)? = nil

        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }

        /// `host:port` as the CLI's `--listen` takes it (`127.0.0.1:8080`, `0.0.0.0:80`, `[::1]:8080`).
        /// Platform's `ListenAddress` parser; port 0 (the kernel picks one) is allowed here.
        public init(listen: String) throws {
            let address: ListenAddress
            do { address = try ListenAddress(parsing: listen, allowingAnyPort: true) } catch {
                throw ConfigurationError(message: "--listen must be host:port, e.g. 0.0.0.0:80 (got '\(listen)')")
            }
            self.init(host: address.host, port: address.port)
        }
    }

    public struct ConfigurationError: Error, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }

    public let configuration: Configuration
    private let dispatcher: CommandDispatcher
    private let setupPageHTML: String
    private let group: any EventLoopGroup
    private let ownsGroup: Bool
    private let readyPromise: EventLoopPromise<SocketAddress>
    private let channel = Mutex<(any Channel)?>(nil)
    private let livenessTask = Mutex<LivenessTicker?>(nil)
    fileprivate let liveness: Atomic<UInt64>
    private let limiter: Mutex<ConnectionLimiter>
    private let readyResolved = Atomic<Bool>(false)

    /// - Parameters:
    ///   - setupPageHTML: served at `GET /` as `text/html; charset=utf-8`.
    ///   - group: defaults to a private event loop group with `configuration.eventLoops` loops (one per usable core
    ///     when nil), shut down by `stop()`.
    public init(configuration: Configuration, dispatcher: CommandDispatcher, setupPageHTML: String,
                group: (any EventLoopGroup)? = nil) {
        self.configuration = configuration
        self.dispatcher = dispatcher
        self.setupPageHTML = setupPageHTML
        self.group = group ?? MultiThreadedEventLoopGroup(
            numberOfThreads: max(1, configuration.eventLoops ?? UsableCPUs.threads(systemCount: System.coreCount)))
        self.ownsGroup = group == nil
        self.readyPromise = self.group.next().makePromise(of: SocketAddress.self)
        self.liveness = Atomic(NIODeadline.now().uptimeNanoseconds)
        self.limiter = Mutex(ConnectionLimiter(total: configuration.maxConnections,
                                               perPeer: configuration.maxConnectionsPerPeer))
    }

    deinit {
        // Never leave the ready future unfulfilled (NIO would complain about a leaked promise).
        if !readyResolved.load(ordering: .relaxed) { readyPromise.fail(ChannelError.ioOnClosedChannel) }
    }

    /// Succeeds with the bound address once the server listens; fails when binding failed.
    public var ready: EventLoopFuture<SocketAddress> { readyPromise.futureResult }

    /// The bound port, nil before `start()` finished.
    public var localPort: Int? { channel.withLock { $0?.localAddress?.port } }

    /// Connections currently open (accepted, not over the cap).
    public var connectionCount: Int { limiter.withLock { $0.open } }

    /// Binds and starts serving. Returns the bound address (the actual port when `port` was 0).
    @discardableResult
    public func start() async throws -> SocketAddress {
        let authorizer = CommandAuthorizer(tokenRequired: configuration.tokenRequired,
                                           protectedCommands: configuration.protectedCommands,
                                           tokenIsValid: configuration.tokenIsValid)
        var limits = HTTPConnectionMachine.Limits()
        limits.idleTimeout = configuration.idleTimeout
        limits.headTimeout = configuration.headTimeout
        limits.writeTimeout = configuration.writeTimeout
        limits.maxQueuedRequests = configuration.maxQueuedRequests
        limits.maxQueuedBytes = configuration.maxQueuedBytes
        let settings = HTTPHandlerSettings(
            maxBodyBytes: configuration.maxBodyBytes, lingerTime: configuration.lingerTime,
            access: AccessSettings(authorizer: authorizer, arrivedOnOpenSetupAccessPoint: configuration.arrivedOnOpenSetupAccessPoint,
                                   browser: configuration.browser),
            upload: configuration.upload.map { UploadSettings($0) }, getRoutes: configuration.getRoutes, limits: limits,
            preEncoded: configuration.meterReadingVersion.map { PreEncodedReplies(version: $0) },
            staticFiles: configuration.staticFiles, metrics: configuration.metrics)
        let html = ByteBuffer(string: setupPageHTML)
        let dispatcher = self.dispatcher
        let server = self  // for the connection limits
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: configuration.backlog)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)  // IPPROTO_TCP: at SOL_SOCKET this number is SO_DEBUG (needs CAP_NET_ADMIN)
            // What one read cycle can bring in (4 × 4 KiB) bounds what the decoder hands over while reading is paused.
            .childChannelOption(.maxMessagesPerRead, value: 4)
            .childChannelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 2048,
                                                                                        maximum: 4 * 1024))
            .childChannelOption(.writeBufferWaterMark, value: .init(low: 16 * 1024, high: 64 * 1024))
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    let peer = PeerAddress.limitKey(channel.remoteAddress)
                    let verdict = server.limiter.withLock { $0.acquire(peer) }
                    guard verdict == .accepted else {
                        try sync.addHandler(HTTPResponseEncoder())
                        try sync.addHandler(RejectConnectionHandler(lingerTime: settings.lingerTime, verdict: verdict))
                        return
                    }
                    channel.closeFuture.whenComplete { _ in server.limiter.withLock { $0.release(peer) } }
                    try Self.configureConnection(sync, dispatcher: dispatcher, setupPage: html, settings: settings)
                }
            }
        do {
            let server = try await bootstrap.bind(host: configuration.host, port: configuration.port).get()
            channel.withLock { $0 = server }
            let tick = LivenessTicker(server: self, interval: configuration.livenessInterval)
            server.eventLoop.execute { tick.handleScheduledCallback(eventLoop: server.eventLoop) }
            livenessTask.withLock { $0 = tick }
            guard let address = server.localAddress else { throw ChannelError.unknownLocalAddress }
            readyResolved.store(true, ordering: .relaxed)
            readyPromise.succeed(address)
            return address
        } catch {
            readyResolved.store(true, ordering: .relaxed)
            readyPromise.fail(error)
            throw error
        }
    }

    /// Stops listening, closes the listening socket and (when it owns it) shuts down the event loop group.
    public func stop() async throws {
        let server = channel.withLock { c -> (any Channel)? in
            defer { c = nil }
            return c
        }
        livenessTask.withLock { $0?.stop(); $0 = nil }
        if let server { try? await server.close() }
        if ownsGroup { try await group.shutdownGracefully() }
    }

    /// The per-connection pipeline (also used by the EmbeddedChannel tests).
    static func configureConnection(_ sync: ChannelPipeline.SynchronousOperations, dispatcher: CommandDispatcher,
                                    setupPage: ByteBuffer, settings: HTTPHandlerSettings) throws {
        try sync.addHandler(ByteTapHandler())
        try sync.addHandler(HTTPResponseEncoder())
        try sync.addHandler(ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes)))
        try sync.addHandler(APIHTTPHandler(dispatcher: dispatcher, setupPage: setupPage, settings: settings))
    }

    // MARK: watchdog

    /// Monotonic nanoseconds (NIODeadline uptime) at which the event loop last ran the liveness tick.
    public var lastLivenessTick: UInt64 { liveness.load(ordering: .relaxed) }

    /// True when the event loop ran its tick within `window`: send systemd WATCHDOG=1 only then.
    public func isAlive(within window: TimeAmount) -> Bool {
        let age = NIODeadline.now().uptimeNanoseconds &- lastLivenessTick
        return Int64(clamping: age) <= window.nanoseconds
    }

}

/// Refreshes the server's liveness timestamp on its event loop every `interval` (the watchdog asks `isAlive`).
/// Issue 18: reschedules itself with NIO's scheduled callbacks, which cost no promise, future or closure per tick
/// (`scheduleRepeatedTask` allocated eight blocks a second while nobody asked anything).
final class LivenessTicker: NIOScheduledCallbackHandler, Sendable {
    private weak let server: APIServer?
    private let interval: TimeAmount
    private let stopped = Atomic<Bool>(false)

    init(server: APIServer, interval: TimeAmount) {
        self.server = server
        self.interval = interval
    }

    /// No further ticks (one already scheduled finds the flag and ends).
    func stop() { stopped.store(true, ordering: .relaxed) }

    func handleScheduledCallback(eventLoop: some EventLoop) {
        guard !stopped.load(ordering: .relaxed), let server else { return }
        server.liveness.store(NIODeadline.now().uptimeNanoseconds, ordering: .relaxed)
        _ = try? eventLoop.scheduleCallback(in: interval, handler: self)
    }
}

/// Connection slots: a cap for the server and one per peer address, so one address (a slowloris, a runaway
/// script, loopback included) cannot lock every other client out.
struct ConnectionLimiter {
    enum Verdict: Equatable { case accepted, serverFull, peerFull }

    let total: Int
    let perPeer: Int
    private(set) var open = 0
    private var byPeer: [String: Int] = [:]

    init(total: Int, perPeer: Int) {
        self.total = total
        self.perPeer = perPeer
    }

    mutating func acquire(_ peer: String) -> Verdict {
        if open >= total { return .serverFull }
        if byPeer[peer, default: 0] >= perPeer { return .peerFull }
        open += 1
        byPeer[peer, default: 0] += 1
        return .accepted
    }

    mutating func release(_ peer: String) {
        guard let n = byPeer[peer] else { return }
        open -= 1
        byPeer[peer] = n > 1 ? n - 1 : nil
    }

    func count(_ peer: String) -> Int { byPeer[peer, default: 0] }
}

/// Issue 16: the `/metrics` hook. `render` runs on the event loop: it must answer from memory (snapshots, counters).
public struct MetricsRoute: Sendable {
    public var contentType: String
    public var render: @Sendable () -> [UInt8]
    /// Called once per reply the server writes, with its HTTP status.
    public var countResponse: @Sendable (Int) -> Void

    public init(contentType: String, render: @escaping @Sendable () -> [UInt8],
                countResponse: @escaping @Sendable (Int) -> Void) {
        self.contentType = contentType
        self.render = render
        self.countResponse = countResponse
    }
}
