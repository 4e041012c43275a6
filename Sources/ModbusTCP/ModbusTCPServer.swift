import KPM33B
import ModbusCore
import NIOCore
import NIOPosix
import Platform
import Synchronization

/// The Modbus TCP server (issue 17): other masters (an energy manager, a wallbox, Home Assistant) read the meters
/// through the board instead of fighting it on the RS485 wire. Unit id = meter address.
///
/// FC03 inside the measurement and energy blocks is answered from the meter's latest snapshot (no bus traffic);
/// everything else the classifier accepts is forwarded to the bus between poll transactions, with a deadline.
/// This type only executes `ModbusTCPClassifier`'s decisions.
public final class ModbusTCPServer: Sendable {
    public struct Configuration: Sendable {
        public var host: String
        public var port: Int
        /// Peers that may write (FC05, FC16); everyone may read.
        public var allow: ModbusTCPAllowList
        public var maxConnectionsPerPeer = 16
        public var maxConnections = 64
        /// A connection with no request for this long is closed.
        public var idleTimeout: TimeAmount = .seconds(60)
        /// A forwarded request without an answer by then gets exception 0x0B.
        public var forwardTimeout: TimeAmount = .seconds(3)
        /// Snapshots older than this (wall time) are not served.
        public var maxSnapshotAgeSeconds: Int64 = 5
        /// Bytes buffered per connection before a whole frame arrives (or while a forwarded request is out).
        public var maxBufferedBytes = 4096

        public init(host: String, port: Int, allow: ModbusTCPAllowList) {
            self.host = host
            self.port = port
            self.allow = allow
        }
    }

    let configuration: Configuration
    let links: [UInt8: any MeterLink]
    let bus: MeterBus
    let wallClock: @Sendable () -> Int64
    private let group: MultiThreadedEventLoopGroup
    private let channel = Mutex<Channel?>(nil)
    private let connections = Mutex<(total: Int, perPeer: [String: Int])>((0, [:]))
    /// Register images per meter, re-encoded once per snapshot generation.
    private let images = Mutex<[UInt8: (generation: UInt64, registers: SnapshotRegisters)]>([:])

    public init(configuration: Configuration, bus: MeterBus, wallClock: @escaping @Sendable () -> Int64,
                threads: Int = 1) {
        self.configuration = configuration
        self.bus = bus
        var links: [UInt8: any MeterLink] = [:]
        for meter in bus.meters { links[meter.unit] = meter }
        self.links = links
        self.wallClock = wallClock
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
    }

    /// Binds and serves; returns the bound address.
    public func start() async throws -> SocketAddress {
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 64)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            // IPPROTO_TCP: at SOL_SOCKET this number is SO_DEBUG, which needs CAP_NET_ADMIN (the board has not).
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            // A master that sends without reading its replies: once this much is queued, its requests wait (and
            // its input, capped at `maxBufferedBytes`, closes the connection when full).
            .childChannelOption(.writeBufferWaterMark, value: .init(low: 8 * 1024, high: 32 * 1024))
            .childChannelInitializer { [self] channel in
                let peer = channel.remoteAddress?.ipAddress ?? "?"
                guard admit(peer) else { return channel.close() }
                channel.closeFuture.whenComplete { [self] _ in release(peer) }
                let handler = ModbusTCPConnectionHandler(server: self, mayWrite: configuration.allow.permits(peer))
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        IdleStateHandler(readTimeout: configuration.idleTimeout))
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
        let ch = try await bootstrap.bind(host: configuration.host, port: configuration.port).get()
        channel.withLock { $0 = ch }
        guard let address = ch.localAddress else { throw ChannelError.unknownLocalAddress }
        return address
    }

    public func stop() async throws {
        if let ch = channel.withLock({ c -> Channel? in let x = c; c = nil; return x }) {
            try? await ch.close()
        }
        try await group.shutdownGracefully()
    }

    private func admit(_ peer: String) -> Bool {
        connections.withLock { c in
            guard c.total < configuration.maxConnections,
                  c.perPeer[peer, default: 0] < configuration.maxConnectionsPerPeer else { return false }
            c.total += 1
            c.perPeer[peer, default: 0] += 1
            return true
        }
    }

    private func release(_ peer: String) {
        connections.withLock { c in
            c.total -= 1
            let n = c.perPeer[peer, default: 1] - 1
            c.perPeer[peer] = n > 0 ? n : nil
        }
    }

    /// FC03 from the snapshot: the reply PDU, or 0x0B when the meter is offline/stale or the block was never read.
    func snapshotReply(unit: UInt8, start: UInt16, count: UInt16) -> [UInt8] {
        let failed = MBAP.exception(FunctionCode.readHoldingRegisters.rawValue, ExceptionCode.gatewayTargetFailed.rawValue)
        guard let link = links[unit] else { return failed }
        let snapshot = link.snapshot()
        guard SnapshotRegisters.isCurrent(snapshot, now: wallClock(), maxAgeSeconds: configuration.maxSnapshotAgeSeconds)
        else { return failed }
        let registers: SnapshotRegisters
        if let hit = images.withLock({ $0[unit] }), hit.generation == snapshot.generation {
            registers = hit.registers
        } else {
            registers = SnapshotRegisters(snapshot)
            images.withLock { $0[unit] = (snapshot.generation, registers) }
        }
        return registers.readReply(start: start, count: count) ?? failed
    }

    func classify(_ frame: MBAP.Frame, mayWrite: Bool) -> ModbusTCPAction {
        ModbusTCPClassifier.classify(unit: frame.unit, pdu: frame.pdu, knownUnit: links[frame.unit] != nil,
                                     mayWrite: mayWrite)
    }
}

/// One TCP connection: frames in order, one request at a time (a forwarded request holds the next ones back, so
/// replies keep the request order).
final class ModbusTCPConnectionHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let server: ModbusTCPServer
    private let mayWrite: Bool
    private var input: [UInt8] = []
    private var start = 0
    /// The transaction of the forwarded request in flight, if any.
    private var inFlight: UInt64?
    private var nextToken: UInt64 = 0
    private var context: ChannelHandlerContext?

    init(server: ModbusTCPServer, mayWrite: Bool) {
        self.server = server
        self.mayWrite = mayWrite
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        if start > 0 { input.removeFirst(start); start = 0 }
        input.append(contentsOf: buffer.readBytes(length: buffer.readableBytes) ?? [])
        process(context: context)
        // What is left is a partial frame, or frames held back (a forwarded request out, replies not read).
        if input.count - start > server.configuration.maxBufferedBytes { context.close(promise: nil) }
    }

    func channelReadComplete(context: ChannelHandlerContext) { context.flush() }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { process(context: context); context.flush() }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent { context.close(promise: nil); return }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) { context.close(promise: nil) }

    private func send(_ context: ChannelHandlerContext, _ frame: MBAP.Frame, _ pdu: [UInt8], flush: Bool) {
        let bytes = MBAP.encode(transaction: frame.transaction, unit: frame.unit, pdu: pdu)
        var out = context.channel.allocator.buffer(capacity: bytes.count)
        out.writeBytes(bytes)
        if flush { context.writeAndFlush(wrapOutboundOut(out), promise: nil) } else { context.write(wrapOutboundOut(out), promise: nil) }
    }

    private func process(context: ChannelHandlerContext) {
        while inFlight == nil && context.channel.isActive {
            // Replies nobody reads: stop answering until the peer reads again.
            guard context.channel.isWritable else { context.flush(); return }
            switch MBAP.decode(input[start...]) {
            case .needMore:
                return
            case .invalid:
                context.close(promise: nil)
                return
            case .frame(let frame, let consumed):
                start += consumed
                switch server.classify(frame, mayWrite: mayWrite) {
                case .reply(let pdu):
                    send(context, frame, pdu, flush: false)
                case .readSnapshot(let unit, let first, let count):
                    send(context, frame, server.snapshotReply(unit: unit, start: first, count: count), flush: false)
                case .forward(let request):
                    forward(request, frame: frame, context: context)
                }
            }
        }
    }

    private func forward(_ request: ModbusRequest, frame: MBAP.Frame, context: ChannelHandlerContext) {
        nextToken &+= 1
        let token = nextToken
        inFlight = token
        let loop = context.eventLoop
        let timeout = server.configuration.forwardTimeout
        let deadline = MonotonicClock.nowNanos() &+ UInt64(max(0, timeout.nanoseconds))
        let fc = request.function.rawValue
        // Whichever comes first answers: the bus or the deadline.
        let finish: @Sendable (ForwardOutcome) -> Void = { [self] outcome in
            loop.execute { [self] in
                guard inFlight == token, let context = self.context else { return }
                inFlight = nil
                send(context, frame, ModbusTCPClassifier.replyPDU(outcome, function: fc), flush: true)
                process(context: context)
                context.flush()
            }
        }
        loop.scheduleTask(in: timeout) { finish(.failed) }
        server.bus.forward(request, deadline: deadline, completion: finish)
    }
}
