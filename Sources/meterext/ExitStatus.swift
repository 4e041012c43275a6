import ArgumentParser
import KPM33B

/// Every exit status a meterext command ends with, and what it means; `meterext --help` lists them all.
///
/// The numbers are an interface (scripts and the installer's checks test them), so they never change. A few numbers
/// mean one thing for the commands that talk to the meter and another for those that talk to the running service;
/// those share a number but are separate cases, so every `throw` says which it means.
enum ExitStatus: CaseIterable {
    case success
    /// The command could not do what was asked (unknown status code, an error reply from the service or the
    /// update engine, the service could not start).
    case failed
    /// read, relay, scan: the meter did not answer at all.
    case noReply
    /// status: the service has no current reading from the meter (offline, or not read yet).
    case meterOffline
    /// bench: not run under the allocation counter.
    case benchWithoutCounter
    /// read, relay: replies arrive with CRC or parity errors.
    case lineErrors
    /// status, wifi: the running service cannot be reached on --api.
    case serviceUnreachable
    /// read, relay: the device refused the request (Modbus exception).
    case refused
    /// read, relay: another device or garbage answered.
    case garbled
    /// read, relay, scan: the serial port could not be opened or configured.
    case serialPort
    /// run: the flags, config file or board profile are invalid (also every command's own usage errors).
    case usage

    var code: Int32 {
        switch self {
        case .success: return 0
        case .failed: return 1
        case .noReply, .meterOffline, .benchWithoutCounter: return 2
        case .lineErrors, .serviceUnreachable: return 3
        case .refused: return 4
        case .garbled: return 5
        case .serialPort: return 6
        case .usage: return 64
        }
    }

    var meaning: String {
        switch self {
        case .success: return "done"
        case .failed: return "failed: unknown status code, an error reply, the service could not start"
        case .noReply: return "read, relay, scan: no reply from the meter (wiring, address, baud rate)"
        case .meterOffline: return "status: the service has no current reading from the meter"
        case .benchWithoutCounter: return "bench: run it under LD_PRELOAD=malloc_count.so"
        case .lineErrors: return "read, relay: CRC or parity errors (parity setting, A/B swapped, noise)"
        case .serviceUnreachable: return "status, wifi: the service cannot be reached (is it running?)"
        case .refused: return "read, relay: the device refused the request (is it a KPM33B?)"
        case .garbled: return "read, relay: another device or garbage answered"
        case .serialPort: return "read, relay, scan: the serial port could not be used"
        case .usage: return "invalid flags, config file or board profile"
        }
    }

    /// The status to end the process with (`throw ExitStatus.noReply.exit`).
    var exit: ExitCode { ExitCode(code) }

    /// One line per status, numbers aligned: for `--help` discussions.
    static func table(_ statuses: [ExitStatus] = ExitStatus.allCases) -> String {
        statuses.map { status in
            let number = String(status.code)
            return "  " + String(repeating: " ", count: max(0, 3 - number.count)) + number + "  " + status.meaning
        }.joined(separator: "\n")
    }

    /// The status for a link error the poll loop reported (read, relay).
    static func forLinkError(_ kind: LinkError.Kind?) -> ExitStatus {
        switch kind {
        case .timeout?, nil: return .noReply
        case .crc?: return .lineErrors
        case .exception?: return .refused
        case .wrongSlave?, .wrongFunction?, .malformed?: return .garbled
        case .io?: return .serialPort
        }
    }
}
