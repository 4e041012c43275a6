import Platform
import CPlatform
import Glibc
import ModbusCore

/// A serial port in raw mode, configured for one Modbus RTU line and verified after configuring.
///
/// Non-blocking underneath: `read` waits with ppoll up to a timeout, `write` waits for room with ppoll. Nothing in
/// read, write, flush or drain allocates. Not thread-safe: use one port from one thread at a time.
public final class SerialPort {
    /// Every baud rate the KPM33B offers (1200…19200) plus the common faster ones.
    public static let supportedBaudRates = LineSettings.meterBaudRates + [38400, 57600, 115200]

    public let path: String
    public let line: LineSettings
    /// True for a pseudo-terminal (a simulator or socat on the other end) rather than a UART.
    public let isPseudoTerminal: Bool
    /// The open descriptor, or -1 once closed.
    /// (`@exclusivity(unchecked)`, issue 18: read on every call of the Modbus transaction path; one thread at a time
    /// uses a port.)
    @exclusivity(unchecked) public private(set) var fileDescriptor: Int32

    private let characterNanos: UInt64
    private var lineStatusUnsupported = false

    /// Opens and configures `path` for `line`.
    ///
    /// Raw mode (no line discipline processing, no CR/LF translation, no software or hardware flow control),
    /// CLOCAL|CREAD, VMIN=0/VTIME=0, the asked-for speed, data bits, stop bits and parity (with INPCK, without
    /// IGNPAR, so a parity error reaches the CRC check instead of vanishing). The settings are read back after
    /// tcsetattr, which succeeds if *any* of the changes was applied; if the parity or speed didn't stick, the
    /// open fails rather than carry on with a line the meter can't understand.
    public init(path: String, line: LineSettings) throws(SystemError) {
        guard let speed = SerialPort.speed(forBaud: line.baud) else {
            throw SystemError(
                operation: "configure", errno: EINVAL, path: path,
                detail: "\(line.baud) baud is not supported; use one of "
                    + SerialPort.supportedBaudRates.map(String.init).joined(separator: ", "))
        }
        guard line.dataBits == 7 || line.dataBits == 8 else {
            throw SystemError(
                operation: "configure", errno: EINVAL, path: path,
                detail: "\(line.dataBits) data bits is not supported (Modbus RTU uses 8)")
        }
        guard line.stopBits == 1 || line.stopBits == 2 else {
            throw SystemError(
                operation: "configure", errno: EINVAL, path: path,
                detail: "\(line.stopBits) stop bits is not supported (1 or 2)")
        }
        let fd = try systemOpen(path, flags: O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC)
        let isPTY = SerialPort.isPseudoTerminal(fd)
        do {
            try SerialPort.configure(fd, path: path, line: line, speed: speed, isPTY: isPTY)
        } catch {
            systemClose(fd)
            throw error
        }
        self.path = path
        self.line = line
        self.isPseudoTerminal = isPTY
        self.fileDescriptor = fd
        self.characterNanos = FrameTiming(line).characterNanos
    }

    deinit {
        close()
    }

    /// Closes the port. Safe to call more than once; every later call on the port fails with EBADF.
    public func close() {
        guard fileDescriptor >= 0 else { return }
        systemClose(fileDescriptor)
        fileDescriptor = -1
    }

    // MARK: Data

    /// Writes all of `bytes`, waiting for room in the kernel's output buffer when it is full.
    ///
    /// Returns when the last byte is in the kernel, not when it has left the UART (see `RS485Port.send`).
    /// Fails with ETIMEDOUT if the port accepts nothing for far longer than the line needs to empty a buffer.
    @discardableResult
    public func write(_ bytes: UnsafeRawBufferPointer) throws(SystemError) -> Int {
        var written = 0
        // The kernel wakes a blocked writer once 256 bytes are free; twice that at the line rate, at least 1 s.
        let stallLimit = max(1_000_000_000, 512 &* characterNanos)
        while written < bytes.count {
            let rest = UnsafeRawBufferPointer(rebasing: bytes[written...])
            if let n = try systemWrite(fileDescriptor, rest, path: path) {
                written += n
                continue
            }
            let ready = try systemPoll(
                fileDescriptor, events: Int16(POLLOUT), deadline: MonotonicClock.nowNanos() &+ stallLimit, path: path)
            if ready == 0 {
                throw SystemError(
                    operation: "write", errno: ETIMEDOUT, path: path,
                    detail: "the port took no data for \(stallLimit / 1_000_000) ms "
                        + "(stuck flow control, or nothing reading the other end of the pty?)")
            }
            if ready & Int16(POLLNVAL) != 0 {
                throw SystemError(operation: "write", errno: EBADF, path: path)
            }
            // POLLOUT, or POLLERR/POLLHUP whose errno the next write reports.
        }
        return written
    }

    /// Reads whatever has arrived, up to `buffer.count` bytes, waiting at most `timeoutNanos` for the first byte.
    /// Returns 0 on timeout (never blocks longer; a timeout of 0 only takes what is already there).
    public func read(into buffer: UnsafeMutableRawBufferPointer, timeoutNanos: UInt64) throws(SystemError) -> Int {
        guard buffer.count > 0 else { return 0 }
        let deadline = MonotonicClock.nowNanos() &+ timeoutNanos
        var hungUp = false
        while true {
            // With VMIN=0/VTIME=0 the tty returns 0 (not EAGAIN) when nothing is there; both mean "wait".
            if let n = try systemRead(fileDescriptor, buffer, path: path), n > 0 {
                return n
            }
            if hungUp {
                throw SystemError(operation: "read", errno: EIO, path: path, detail: "the line hung up")
            }
            if MonotonicClock.nowNanos() >= deadline { return 0 }
            let ready = try systemPoll(fileDescriptor, events: Int16(POLLIN), deadline: deadline, path: path)
            if ready == 0 { return 0 }
            if ready & Int16(POLLNVAL) != 0 {
                throw SystemError(operation: "read", errno: EBADF, path: path)
            }
            // POLLHUP with nothing to read would make poll return at once forever: read once more, then give up.
            hungUp = ready & Int16(POLLHUP) != 0 && ready & Int16(POLLIN) == 0
        }
    }

    /// Discards everything received but not yet read. The corresponding C function is `tcflush(TCIFLUSH)`.
    public func flushInput() throws(SystemError) {
        try systemFlush(fileDescriptor, queue: TCIFLUSH, path: path)
    }

    /// Waits until the kernel says all output was transmitted. The corresponding C function is `tcdrain`.
    ///
    /// How exact that is depends on the driver: some return as soon as the software buffer is empty while the
    /// FIFO is still shifting, some poll in scheduler ticks and return milliseconds late. `RS485Port` prefers
    /// `transmitterEmpty()` and uses this only where the driver can't report TEMT.
    public func drain() throws(SystemError) {
        try systemDrain(fileDescriptor, path: path)
    }

    // MARK: Line control

    /// Whether the UART's transmitter (shift register and FIFO) is empty: TIOCSERGETLSR & TIOCSER_TEMT.
    /// `nil` when the driver can't tell (a pty, most USB adapters); after the first such answer the port stops
    /// asking.
    public func transmitterEmpty() -> Bool? {
        if lineStatusUnsupported { return nil }
        var empty: Int32 = 0
        let fd = fileDescriptor
        if (try? retryingInterrupts("TIOCSERGETLSR") { meterext_serial_transmitter_empty(fd, &empty) }) != nil {
            return empty != 0
        }
        // ENOTTY/EINVAL/ENOIOCTLCMD: no line status register behind this tty.
        lineStatusUnsupported = true
        return nil
    }

    /// Asserts (`true`) or deasserts the RTS modem-control line (TIOCMBIS / TIOCMBIC).
    ///
    /// Asserted RTS is electrically *low* on the UART pin; RS485 boards wire it to DE through an inverter or
    /// expect exactly this.
    public func setRTS(_ asserted: Bool) throws(SystemError) {
        let fd = fileDescriptor
        do {
            try systemIoctl(asserted ? "assert RTS on" : "release RTS on", path: nil) {
                meterext_serial_set_rts(fd, asserted ? 1 : 0)
            }
        } catch {
            throw SystemError(
                operation: error.operation, errno: error.errno, path: path,
                detail: isPseudoTerminal
                    ? "a pseudo-terminal has no RTS line; use --direction none with a pty"
                    : "the driver has no RTS control; pick another --direction")
        }
    }

    /// What the kernel applied for its RS485 mode.
    public struct KernelRS485: Equatable, Sendable {
        public var enabled: Bool
        public var rtsOnSend: Bool
        public var delayBeforeSendMs: UInt32
        public var delayAfterSendMs: UInt32
    }

    /// Hands DE control to the UART driver (TIOCSRS485): the kernel raises RTS before the first bit and drops it
    /// after the last one, per frame, without waking us. Fails if the driver has no RS485 mode or switches it
    /// off again; returns what the kernel actually applied (it clamps delays).
    @discardableResult
    public func enableKernelRS485(
        rtsOnSend: Bool = true, delayBeforeSendMs: UInt32 = 0, delayAfterSendMs: UInt32 = 0
    ) throws(SystemError) -> KernelRS485 {
        let fd = fileDescriptor
        var wanted = meterext_rs485(
            enabled: 1, rts_on_send: rtsOnSend ? 1 : 0,
            delay_before_ms: delayBeforeSendMs, delay_after_ms: delayAfterSendMs)
        var applied = meterext_rs485()
        do {
            try systemIoctl("enable kernel RS485 (TIOCSRS485) on", path: nil) {
                meterext_serial_set_rs485(fd, &wanted, &applied)
            }
        } catch {
            throw SystemError(
                operation: error.operation, errno: error.errno, path: path,
                detail: isPseudoTerminal
                    ? "a pseudo-terminal has no RS485 mode; use --direction none with a pty"
                    : "this UART driver has no kernel RS485 mode; use --direction rts or gpio:<line>")
        }
        let result = KernelRS485(
            enabled: applied.enabled != 0, rtsOnSend: applied.rts_on_send != 0,
            delayBeforeSendMs: applied.delay_before_ms, delayAfterSendMs: applied.delay_after_ms)
        guard result.enabled, result.rtsOnSend == rtsOnSend else {
            throw SystemError(
                operation: "enable kernel RS485 (TIOCSRS485) on", errno: 0, path: path,
                detail: "the driver accepted the call but did not apply it (enabled: \(result.enabled), "
                    + "RTS on send: \(result.rtsOnSend)); use --direction rts or gpio:<line>")
        }
        return result
    }

    /// The kernel RS485 mode currently set on the port (TIOCGRS485), or nil if the driver has none.
    public func kernelRS485() -> KernelRS485? {
        var current = meterext_rs485()
        guard meterext_serial_get_rs485(fileDescriptor, &current) == 0 else { return nil }
        return KernelRS485(
            enabled: current.enabled != 0, rtsOnSend: current.rts_on_send != 0,
            delayBeforeSendMs: current.delay_before_ms, delayAfterSendMs: current.delay_after_ms)
    }

    /// Switches the kernel RS485 mode off, if the driver has one and it is on (a device tree can enable it at
    /// boot, and then the driver toggles RTS behind the back of `--direction rts`).
    public func disableKernelRS485() throws(SystemError) {
        guard let current = kernelRS485(), current.enabled else { return }
        let fd = fileDescriptor
        var off = meterext_rs485(
            enabled: 0, rts_on_send: current.rtsOnSend ? 1 : 0, delay_before_ms: 0, delay_after_ms: 0)
        try systemIoctl("disable kernel RS485 (TIOCSRS485) on", path: path) {
            meterext_serial_set_rs485(fd, &off, nil)
        }
    }

    // MARK: Configuration

    static func speed(forBaud baud: Int) -> speed_t? {
        let constant: Int32
        switch baud {
        case 1200: constant = B1200
        case 2400: constant = B2400
        case 4800: constant = B4800
        case 9600: constant = B9600
        case 19200: constant = B19200
        case 38400: constant = B38400
        case 57600: constant = B57600
        case 115200: constant = B115200
        default: return nil
        }
        return speed_t(constant)
    }

    static func baud(forSpeed speed: speed_t) -> Int? {
        supportedBaudRates.first { self.speed(forBaud: $0) == speed }
    }

    /// Unix98 pty slaves are char majors 136–143, masters 128–135; legacy BSD ptys 2 and 3.
    static func isPseudoTerminal(_ fd: Int32) -> Bool {
        var major: UInt32 = 0
        var minor: UInt32 = 0
        guard meterext_fd_device_numbers(fd, &major, &minor) == 0 else { return false }
        return (128...143).contains(major) || major == 2 || major == 3
    }

    /// The termios for `line`, starting from `current` (cfmakeraw, then every flag that matters set explicitly,
    /// because cfmakeraw leaves some of them alone).
    static func rawSettings(from current: termios, line: LineSettings, speed: speed_t) -> termios {
        var t = current
        cfmakeraw(&t)
        t.c_iflag &= ~tcflag_t(
            IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON | IXOFF | IXANY | IGNPAR | INPCK
                | IMAXBEL)
        t.c_oflag &= ~tcflag_t(OPOST | ONLCR | OCRNL | ONOCR | ONLRET)
        t.c_lflag &= ~tcflag_t(ECHO | ECHONL | ICANON | ISIG | IEXTEN)
        t.c_cflag &= ~(tcflag_t(CSIZE | CSTOPB | PARENB | PARODD) | tcflag_t(CRTSCTS) | tcflag_t(CMSPAR))
        t.c_cflag |= tcflag_t(CLOCAL | CREAD) | tcflag_t(line.dataBits == 7 ? CS7 : CS8)
        if line.stopBits == 2 { t.c_cflag |= tcflag_t(CSTOPB) }
        switch line.parity {
        case .none:
            break
        case .even:
            t.c_cflag |= tcflag_t(PARENB)
            t.c_iflag |= tcflag_t(INPCK)
        case .odd:
            t.c_cflag |= tcflag_t(PARENB | PARODD)
            t.c_iflag |= tcflag_t(INPCK)
        }
        withUnsafeMutableBytes(of: &t.c_cc) { cc in
            cc[Int(VMIN)] = 0
            cc[Int(VTIME)] = 0
        }
        _ = cfsetispeed(&t, speed)
        _ = cfsetospeed(&t, speed)
        return t
    }

    /// `9600 8E1` as read back from a termios.
    static func describe(_ t: termios) -> String {
        var copy = t
        let speed = cfgetospeed(&copy)
        let baud = baud(forSpeed: speed).map(String.init) ?? "speed code \(speed)"
        let size = t.c_cflag & tcflag_t(CSIZE)
        let bits = size == tcflag_t(CS8) ? 8 : size == tcflag_t(CS7) ? 7 : size == tcflag_t(CS6) ? 6 : 5
        let parity =
            t.c_cflag & tcflag_t(PARENB) == 0 ? "N" : (t.c_cflag & tcflag_t(PARODD) != 0 ? "O" : "E")
        let stop = t.c_cflag & tcflag_t(CSTOPB) != 0 ? 2 : 1
        return "\(baud) \(bits)\(parity)\(stop)"
    }

    static func ptyParityError(_ path: String, _ line: LineSettings, errno: Int32) -> SystemError {
        SystemError(
            operation: "configure", errno: errno, path: path,
            detail: "\(path) is a pseudo-terminal, and ptys can't do parity (there is no wire to put a parity bit "
                + "on); asked for \(line): use --parity none (8N1) with a pty")
    }

    static func configure(_ fd: Int32, path: String, line: LineSettings, speed: speed_t, isPTY: Bool) throws(SystemError) {
        let wanted = rawSettings(from: try systemGetAttributes(fd, path: path), line: line, speed: speed)
        do {
            try systemSetAttributes(fd, wanted, path: path)
        } catch {
            if isPTY && line.parity != .none { throw ptyParityError(path, line, errno: error.errno) }
            throw SystemError(
                operation: "tcsetattr", errno: error.errno, path: path,
                detail: "the driver refused \(line)")
        }
        // Some pty implementations accept PARENB and ignore it; either way there's no parity on a pty.
        if isPTY && line.parity != .none { throw ptyParityError(path, line, errno: EINVAL) }

        var applied = try systemGetAttributes(fd, path: path)
        let mask = tcflag_t(CSIZE | CSTOPB | PARENB | PARODD)
        let formatApplied = applied.c_cflag & mask == wanted.c_cflag & mask
        let inputCheckApplied = applied.c_iflag & tcflag_t(INPCK) == wanted.c_iflag & tcflag_t(INPCK)
        let outSpeed = cfgetospeed(&applied)
        let inSpeed = cfgetispeed(&applied)
        let speedApplied = outSpeed == speed && (inSpeed == speed || inSpeed == 0)
        guard formatApplied, inputCheckApplied, speedApplied else {
            throw SystemError(
                operation: "configure", errno: 0, path: path,
                detail: "the driver did not apply the line settings: asked for \(line), got "
                    + "\(describe(applied))\(inputCheckApplied ? "" : " without input parity checking"); "
                    + "refusing to run with settings the meter doesn't use")
        }
        let rawBroken =
            applied.c_lflag & tcflag_t(ICANON | ECHO | ISIG) != 0 || applied.c_oflag & tcflag_t(OPOST) != 0
            || applied.c_iflag & tcflag_t(IXON | IXOFF | ICRNL | INLCR | IGNCR) != 0
            || applied.c_cflag & tcflag_t(CRTSCTS) != 0
        guard !rawBroken else {
            throw SystemError(
                operation: "configure", errno: 0, path: path,
                detail: "the driver kept line processing or flow control switched on after raw mode was set")
        }

        // Another meterext (or a getty) writing on the bus would corrupt every frame: claim the tty. Not on a pty,
        // whose slave the PTYPair keeps open, so the exclusive flag would outlive this port and block reopening.
        if !isPTY { _ = meterext_serial_set_exclusive(fd) }
        // Whatever arrived before the line was configured is garbage.
        try systemFlush(fd, queue: TCIOFLUSH, path: path)
    }
}
