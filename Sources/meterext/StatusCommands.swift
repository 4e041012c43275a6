import Platform
import ArgumentParser
import FoundationEssentials
import MeterService
import MeterStatus
import NIOCore
import NIOHTTP1
import NIOPosix

struct StatusCodeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status-code",
        abstract: "Look up a CalinMeter status code: AMI 1000–1025, code-87 sub-codes (87.N) or short codes.",
        discussion: """
            Examples: meterext status-code 1003   meterext status-code 87.3 (or 87-03)   meterext status-code 14
            A number that exists in two tables (14 is a short code and a code-87 sub-code) shows both.
            --all prints every table.
            """)

    @Argument(help: "The code: 1003, 87.3 (or 87-3, 87/3), 14 …")
    var code: String?

    @Flag(help: "Print all tables.")
    var all = false

    func run() throws {
        if all {
            let entries = StatusCodes.allAMI + StatusCodes.allRelayDisconnectReasons + StatusCodes.allShortCodes
            print(StatusCodeFormatter.format(entries, query: "all"))
            return
        }
        guard let code else { throw ValidationError("give a code, e.g. 1003 or 87.3, or --all") }
        let entries = StatusCodes.lookup(code)
        print(StatusCodeFormatter.format(entries, query: code))
        if entries.isEmpty { throw ExitStatus.failed.exit }
    }
}

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show the meter's current operating status and the action to take (asks the running service).",
        discussion: """
            Asks the service's meter_status command on --api (default http://127.0.0.1:80/api). Prints the AMI \
            code, the code-87 sub-code, cause and field action, and any alerts (over/under voltage, reversed \
            current, imbalance, low power factor). Exit code 0 when a status is known, 2 when the meter is \
            offline, 3 when the service cannot be reached.
            """)

    @OptionGroup var service: ServiceAPIOptions
    var api: ListenAddress { service.api }

    @Flag(help: "Print the service's JSON reply.")
    var json = false

    typealias Reply = StatusCommands.Reply

    func run() async throws {
        let body: [UInt8]
        do {
            body = try await LocalAPIClient(endpoint: api).post(#"{"cmd":"meter_status"}"#)
        } catch {
            printError("cannot reach the meterext service at \(api): \(error) — is it running? (systemctl status meterext)")
            throw ExitStatus.serviceUnreachable.exit
        }
        if json {
            print(String(decoding: body, as: UTF8.self))
        }
        let reply = try JSONDecoder().decode(Reply.self, from: Data(body))
        if json { return }
        switch reply.status {
        case "offline":
            print("meter offline: no status (a stale one would mislead). Check the RS485 link: meterext read")
            throw ExitStatus.meterOffline.exit
        case "starting":
            print("the service has not read the meter yet; try again in a few seconds")
            throw ExitStatus.meterOffline.exit
        case "unknown":
            print(reply.cause ?? "meter online, but its status cannot be derived")
            if let action = reply.action { print("action: \(action)") }
        default:
            print("AMI \(reply.ami_code ?? "?")  (code 87.\(reply.sub_code ?? "?"))  \(reply.cause ?? "")")
            print("action: \(reply.action ?? "")")
            if reply.prepaid_only == "true" { print("note: prepaid-only code") }
        }
        if let because = reply.because, !because.isEmpty { print("because: \(because)") }
        for alert in reply.alerts {
            print("")
            print("alert AMI \(alert.ami_code) (87.\(alert.sub_code))  \(alert.cause)"
                + (alert.phases.isEmpty ? "" : "  phases \(alert.phases)"))
            if !alert.detail.isEmpty { print("  \(alert.detail)") }
            print("  action: \(alert.action)")
        }
    }
}

/// POSTs one JSON command to the local service with SwiftNIO's HTTP client codec (no hand-written HTTP).
struct LocalAPIClient {
    let endpoint: ListenAddress
    /// Sent as `Authorization: Bearer` when set (the CLI reads it from the state directory).
    var bearerToken: String? = nil

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    func post(_ json: String) async throws -> [UInt8] {
        let host = endpoint.host, port = endpoint.port
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        do {
            let body = try await exchange(json, host: host, port: port, group: group)
            try? await group.shutdownGracefully()
            return body
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
    }

    private func exchange(_ json: String, host: String, port: Int, group: EventLoopGroup) async throws -> [UInt8] {
        let promise = group.next().makePromise(of: [UInt8].self)
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: group)
            .connectTimeout(.seconds(3))
            .channelInitializer { channel in
                channel.pipeline.addHTTPClientHandlers().flatMap {
                    channel.pipeline.addHandler(ResponseCollector(promise: promise))
                }
            }
            .connect(host: host, port: port).get()
        } catch {
            // Never leave the promise unfulfilled (NIO traps on a leaked promise).
            promise.fail(error)
            throw error
        }
        var head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/api")
        head.headers.add(name: "Host", value: endpoint.description)
        head.headers.add(name: "Content-Type", value: "application/json")
        head.headers.add(name: "Content-Length", value: String(json.utf8.count))
        head.headers.add(name: "Connection", value: "close")
        if let bearerToken { head.headers.add(name: "Authorization", value: "Bearer " + bearerToken) }
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        channel.write(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(string: json))), promise: nil)
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        let body = try await promise.futureResult.get()
        try? await channel.close()
        return body
    }

    final class ResponseCollector: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPClientResponsePart
        let promise: EventLoopPromise<[UInt8]>
        var body: [UInt8] = []

        init(promise: EventLoopPromise<[UInt8]>) { self.promise = promise }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head: break
            case .body(var buffer): body += buffer.readBytes(length: buffer.readableBytes) ?? []
            case .end: promise.succeed(body)
            }
        }

        func errorCaught(context: ChannelHandlerContext, error: Error) {
            promise.fail(error)
            context.close(promise: nil)
        }

        func channelInactive(context: ChannelHandlerContext) {
            promise.fail(Failure(description: "connection closed before the reply"))
        }
    }
}
