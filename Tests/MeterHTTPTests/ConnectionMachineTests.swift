@testable import MeterHTTP
import NIOCore
import NIOHTTP1
import XCTest

/// The connection machine with synthetic events: no channel, no clock.
final class ConnectionMachineTests: XCTestCase {
    typealias M = HTTPConnectionMachine

    static func head(_ uri: String = "/api") -> HTTPServerRequestPart {
        .head(HTTPRequestHead(version: .http1_1, method: .POST, uri: uri, headers: ["content-length": "2"]))
    }
    static let body = HTTPServerRequestPart.body(ByteBuffer(string: "{}"))
    static let end = HTTPServerRequestPart.end(nil)

    var limits: M.Limits {
        var l = M.Limits()
        l.maxQueuedRequests = 3
        l.maxQueuedBytes = 4096
        return l
    }

    /// Everything `next()` releases now.
    func drain(_ m: inout M) -> [M.Delivery] {
        var out: [M.Delivery] = []
        while let d = m.next() { out.append(d) }
        return out
    }

    func testFreshConnectionArmsTheIdleTimerAndReads() {
        var m = M(limits: limits)
        XCTAssertEqual(m.settle(), [.setTimer(.idle, .seconds(10))])
        m.readRequested()
        XCTAssertEqual(m.settle(), [.read])
    }

    func testOneRequestFlowsThroughAndReadingPausesWhileItIsAnswered() {
        var m = M(limits: limits)
        _ = m.settle()
        m.bytesArrived()
        XCTAssertEqual(m.settle(), [.setTimer(.head, .seconds(10))], "the head deadline starts at its first byte")
        for p in [Self.head(), Self.body, Self.end] { m.received(p) }
        XCTAssertEqual(drain(&m), [.part(Self.head()), .part(Self.body), .part(Self.end)])
        m.readRequested()
        XCTAssertEqual(m.settle(), [.cancelTimer], "no timer and no reading while the reply is outstanding")
        m.answered(keepAlive: true)
        XCTAssertEqual(m.settle(), [.setTimer(.idle, .seconds(10)), .read])
    }

    func testTheHeadDeadlineIsNotPushedByTricklingBytes() {
        var m = M(limits: limits)
        _ = m.settle()
        m.bytesArrived()
        _ = m.settle()
        for _ in 0..<5 {
            m.bytesArrived()
            XCTAssertEqual(m.settle(), [], "a slowloris byte must not move the deadline")
        }
        m.timerFired(.head)
        XCTAssertEqual(drain(&m), [.reply(.timeout(nil))])
        XCTAssertEqual(m.settle(), [.closeOutputWhenFlushed, .setTimer(.write, .seconds(10))])
        m.outputClosed()
        XCTAssertEqual(m.settle(), [.setTimer(.linger, .seconds(1))])
        m.timerFired(.linger)
        XCTAssertEqual(m.settle(), [.close])
    }

    func testABodyThatKeepsMovingRearmsItsTimerAndAStallIs408WithTheHead() {
        var m = M(limits: limits)
        _ = m.settle()
        m.received(Self.head())
        XCTAssertEqual(drain(&m), [.part(Self.head())])
        XCTAssertEqual(m.settle(), [.setTimer(.body, .seconds(10))])
        m.bytesArrived()
        XCTAssertEqual(m.settle(), [.setTimer(.body, .seconds(10))])
        m.timerFired(.head)  // stale: not the armed timer
        XCTAssertNil(m.next())
        m.timerFired(.body)
        guard case .reply(.timeout(let head?)) = m.next() else { return XCTFail("expected a 408 for the request") }
        XCTAssertEqual(head.uri, "/api")
    }

    func testPipelinedRequestsWaitWhileTheClientDoesNotDrain() {
        var m = M(limits: limits)
        _ = m.settle()
        for _ in 0..<3 { for p in [Self.head(), Self.body, Self.end] { m.received(p) } }
        XCTAssertEqual(drain(&m).count, 3, "first request delivered")
        m.answered(keepAlive: true)
        m.writabilityChanged(false)
        XCTAssertEqual(drain(&m), [], "nothing more while the replies are not drained")
        m.readRequested()
        XCTAssertEqual(m.settle(), [.setTimer(.write, .seconds(10))], "no read; a stuck client is timed out")
        m.writabilityChanged(true)
        XCTAssertEqual(drain(&m).count, 3, "the next request as soon as the client drains")
        m.answered(keepAlive: true)
        XCTAssertEqual(drain(&m).count, 3)
        m.answered(keepAlive: true)
        XCTAssertEqual(m.settle(), [.setTimer(.idle, .seconds(10)), .read], "queue empty: reading again")
    }

    func testTheQueueIsCappedAndTheFirstRequestOverIsAnsweredBusyInOrder() {
        var m = M(limits: limits)
        _ = m.settle()
        // One request in progress, then 3 queued (the cap) and 10 more that do not fit.
        for p in [Self.head(), Self.body, Self.end] { m.received(p) }
        XCTAssertEqual(drain(&m).count, 3)
        for i in 0..<13 { for p in [Self.head("/api?\(i)"), Self.body, Self.end] { m.received(p) } }
        XCTAssertEqual(m.queuedRequestCount, 3)
        m.readRequested()
        XCTAssertFalse(m.settle().contains(.read), "no more input once the cap was passed")
        var delivered = 0
        for _ in 0..<3 {
            m.answered(keepAlive: true)
            let d = drain(&m)
            XCTAssertEqual(d.count, 3)
            delivered += 1
        }
        m.answered(keepAlive: true)
        XCTAssertEqual(drain(&m), [.reply(.busy)], "answered after the ones before it")
        XCTAssertEqual(delivered, 3)
        XCTAssertTrue(m.settle().contains(.closeOutputWhenFlushed))
    }

    func testQueuedBytesAreCappedToo() {
        var l = limits
        l.maxQueuedBytes = 100
        var m = M(limits: l)
        m.received(Self.head())
        m.received(Self.end)
        XCTAssertEqual(drain(&m).count, 2)
        m.received(.head(HTTPRequestHead(version: .http1_1, method: .POST, uri: String(repeating: "x", count: 200))))
        XCTAssertEqual(m.queuedRequestCount, 0)
        m.received(Self.body)
        m.received(Self.end)
        m.answered(keepAlive: true)
        XCTAssertEqual(drain(&m), [.reply(.busy)])
    }

    func testTheBodyOfTheCurrentRequestDoesNotCountAgainstTheCaps() {
        var l = limits
        l.maxQueuedBytes = 100
        var m = M(limits: l)
        m.received(Self.head("/ota"))
        _ = drain(&m)
        let chunk = HTTPServerRequestPart.body(ByteBuffer(repeating: 1, count: 60_000))
        for _ in 0..<10 {
            m.received(chunk)
            XCTAssertEqual(drain(&m), [.part(chunk)])
        }
    }

    func testAnEarlyReplyThatClosesDropsTheRestAndLingers() {
        var m = M(limits: limits)
        m.received(Self.head())
        _ = drain(&m)
        m.answered(keepAlive: false)  // e.g. 413 before the body
        m.received(Self.body)
        m.received(Self.end)
        XCTAssertEqual(drain(&m), [])
        m.readRequested()
        let actions = m.settle()
        XCTAssertTrue(actions.contains(.closeOutputWhenFlushed))
        XCTAssertTrue(actions.contains(.read), "input is swallowed so the client can read the reply")
    }

    func testAnEarlyKeepAliveReplySkipsTheRestOfTheBody() {
        var m = M(limits: limits)
        m.received(Self.head())
        _ = drain(&m)
        m.answered(keepAlive: true)
        for p in [Self.body, Self.end, Self.head("/next"), Self.end] { m.received(p) }
        XCTAssertEqual(drain(&m), [.part(Self.head("/next")), .part(Self.end)])
    }

    func testAParseErrorIsAnsweredAfterTheRequestsBeforeIt() {
        var m = M(limits: limits)
        for p in [Self.head(), Self.end, Self.head("/2"), Self.end] { m.received(p) }
        m.parseError()
        XCTAssertEqual(drain(&m), [.part(Self.head()), .part(Self.end)])
        m.answered(keepAlive: true)
        XCTAssertEqual(drain(&m), [.part(Self.head("/2")), .part(Self.end)])
        m.answered(keepAlive: true)
        XCTAssertEqual(drain(&m), [.reply(.badRequest)])
    }

    func testIdleAndWriteTimersClose() {
        for timer in [M.Timer.idle, .write] {
            var m = M(limits: limits)
            if timer == .write { m.writabilityChanged(false) }
            XCTAssertEqual(m.settle(), [.setTimer(timer, .seconds(10))])
            m.timerFired(timer)
            XCTAssertNil(m.next(), "closed without a reply")
            XCTAssertEqual(m.settle(), [.close])
            XCTAssertEqual(m.settle(), [], "once")
        }
    }

    func testNothingAfterTheConnectionWentAway() {
        var m = M(limits: limits)
        m.received(Self.head())
        m.inactive()
        m.received(Self.end)
        m.readRequested()
        XCTAssertNil(m.next())
        XCTAssertEqual(m.settle(), [])
    }
}

extension ConnectionMachineTests {
    func testAConnectionYieldsAfterItsShareOfRequestsInOneTurn() {
        var l = limits
        l.maxRequestsPerTurn = 2
        l.maxQueuedRequests = 10
        var m = M(limits: l)
        for i in 0..<4 { for p in [Self.head("/\(i)"), Self.end] { m.received(p) } }
        XCTAssertEqual(drain(&m), [.part(Self.head("/0")), .part(Self.end)])
        m.answered(keepAlive: true)
        XCTAssertEqual(drain(&m), [.part(Self.head("/1")), .part(Self.end)])
        m.answered(keepAlive: true)
        XCTAssertEqual(drain(&m), [], "its share is used up")
        XCTAssertEqual(m.settle(), [.yieldTurn])
        XCTAssertEqual(m.settle(), [], "one yield at a time")
        m.nextTurn()
        XCTAssertEqual(drain(&m), [.part(Self.head("/2")), .part(Self.end)])
    }
}

extension ConnectionMachineTests {
    func testASmallBodyMustArriveWithinTheHeadDeadlineAnUploadOnlyMustNotStall() {
        var m = M(limits: limits)
        _ = m.settle()
        m.bytesArrived()
        XCTAssertEqual(m.settle(), [.setTimer(.head, .seconds(10))])
        m.received(Self.head())
        XCTAssertEqual(drain(&m), [.part(Self.head())])
        m.bodyHasDeadline()
        m.bytesArrived()
        XCTAssertEqual(m.settle(), [], "the head's deadline goes on: body bytes do not move it")
        m.timerFired(.head)
        guard case .reply(.timeout(let head?)) = m.next() else { return XCTFail("expected a 408 for the request") }
        XCTAssertEqual(head.uri, "/api")

        var upload = M(limits: limits)
        upload.received(Self.head("/ota"))
        _ = drain(&upload)
        XCTAssertEqual(upload.settle(), [.setTimer(.body, .seconds(10))])
        upload.bytesArrived()
        XCTAssertEqual(upload.settle(), [.setTimer(.body, .seconds(10))], "moving: the stall timer starts over")
    }
}

extension ConnectionMachineTests {
    /// Random event sequences (a fixed xorshift seed, so a failure replays): whatever the client does, the machine
    /// never hands over a new request while the client is not draining or a reply is outstanding, never reads then,
    /// keeps the queue within its caps, and goes quiet once closed.
    func testRandomEventSequencesKeepTheInvariants() {
        var seed: UInt64 = 0x9E37_79B9_7F4A_7C15
        func random(_ n: Int) -> Int {
            seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17
            return Int(seed % UInt64(n))
        }
        let parts: [HTTPServerRequestPart] = [Self.head(), Self.body, Self.end]
        for _ in 0..<2000 {
            var m = M(limits: limits)
            var writable = true
            var outstanding = false  // a request was fully handed over and not answered yet
            var closed = false
            for _ in 0..<60 {
                switch random(9) {
                case 0, 1, 2: m.received(parts[random(3)])
                case 3: m.bytesArrived()
                case 4: writable.toggle(); m.writabilityChanged(writable)
                case 5: m.readRequested()
                case 6: if outstanding { outstanding = false; m.answered(keepAlive: random(4) != 0) }
                case 7: m.timerFired([M.Timer.idle, .head, .body, .write, .linger][random(5)])
                default: m.parseError()
                }
                while let d = m.next() {
                    XCTAssertFalse(closed, "delivered after close")
                    if case .part(.head) = d {
                        XCTAssertTrue(writable, "a new request while the client does not drain")
                        XCTAssertFalse(outstanding, "a new request while a reply is outstanding")
                    }
                    if case .part(.end) = d { outstanding = true }
                }
                XCTAssertLessThanOrEqual(m.queuedRequestCount, limits.maxQueuedRequests)
                for action in m.settle() {
                    switch action {
                    case .read:
                        XCTAssertFalse(closed)
                        if !m.isClosing { XCTAssertTrue(writable && !outstanding, "read while not drained or answering") }
                    case .close: closed = true
                    default: break
                    }
                }
            }
        }
    }

    // MARK: issue 18: the fast path's repeated requests

    /// A machine that answered one request and waits for the next (idle timer armed).
    func answeredOne() -> M {
        var m = M(limits: limits)
        _ = m.settle()
        m.bytesArrived()
        for p in [Self.head(), Self.body, Self.end] { m.received(p) }
        _ = drain(&m)
        m.answered(keepAlive: true)
        _ = m.settle()
        return m
    }

    func testARepeatedRequestIsCountedAndAnsweredOnlyAtARequestBoundary() {
        let now = NIODeadline.uptimeNanoseconds(1_000_000_000)
        var m = answeredOne()
        XCTAssertEqual(m.requestCount, 1)
        XCTAssertTrue(m.repeatedRequest(now: now))
        XCTAssertEqual(m.requestCount, 2)
        XCTAssertEqual(m.settle(), [], "no timer is rescheduled for it")

        var receiving = answeredOne()
        receiving.bytesArrived()
        XCTAssertFalse(receiving.repeatedRequest(now: now), "part of a request arrived")
        receiving.received(Self.head())
        _ = drain(&receiving)
        XCTAssertFalse(receiving.repeatedRequest(now: now), "a request is being received")
        receiving.received(Self.body)
        receiving.received(Self.end)
        _ = drain(&receiving)
        XCTAssertFalse(receiving.repeatedRequest(now: now), "its reply is outstanding")
        XCTAssertEqual(receiving.requestCount, 2)

        var blocked = answeredOne()
        blocked.writabilityChanged(false)
        XCTAssertFalse(blocked.repeatedRequest(now: now), "the client does not drain its replies")

        var closing = answeredOne()
        closing.answered(keepAlive: false)
        XCTAssertFalse(closing.repeatedRequest(now: now))

        var busy = answeredOne()
        for _ in 0..<limits.maxRequestsPerTurn - 1 { XCTAssertTrue(busy.repeatedRequest(now: now)) }
        XCTAssertFalse(busy.repeatedRequest(now: now), "the turn is full: the decoder queues it and the connection yields")
        busy.nextTurn()
        XCTAssertTrue(busy.repeatedRequest(now: now))
    }

    func testTheIdleTimerRunsFromTheLastRepeatedRequest() {
        let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
        var m = answeredOne()  // idle timer armed for 10 s at `start`
        XCTAssertTrue(m.repeatedRequest(now: start + .seconds(4)))
        m.timerFired(.idle, now: start + .seconds(10))
        XCTAssertFalse(m.isClosed)
        XCTAssertEqual(m.settle(), [.setTimer(.idle, .seconds(4))], "the rest of the idle time since the last request")
        m.timerFired(.idle, now: start + .seconds(14))
        XCTAssertTrue(m.isClosed)
        XCTAssertEqual(m.settle(), [.close])
    }
}
