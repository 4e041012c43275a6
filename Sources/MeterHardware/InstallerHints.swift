import Glibc
import Platform

extension SystemError {
    /// This error with a hint for the failures people actually hit when bringing a board up (dialout group, UART
    /// disabled, a getty on the port, an unplugged adapter), unless it already says more.
    public func withInstallerHint() -> SystemError {
        guard detail == nil, let hint = Self.installerHint(operation: operation, errno: errno) else { return self }
        var hinted = self
        hinted.detail = hint
        return hinted
    }

    static func installerHint(operation: String, errno: Int32) -> String? {
        switch (operation, errno) {
        case ("open", EACCES), ("open", EPERM):
            return "is the user in the dialout group?"
        case ("open", ENOENT):
            return "no such device; check the port path (ls /dev/ttyAMA* /dev/ttyS* /dev/ttyUSB* /dev/serial/by-id)"
        case ("open", EBUSY):
            return "another process has the port open exclusively (a serial console or getty on it?)"
        case ("open", ENXIO), ("open", ENODEV):
            return "the device node exists but no driver is behind it (UART disabled in config.txt, or adapter unplugged?)"
        case ("tcgetattr", ENOTTY), ("tcgetattr", EINVAL):
            return "not a serial port (a tty device such as /dev/ttyAMA0 or /dev/ttyUSB0 is needed)"
        case (_, EIO):
            return "the device went away (USB adapter unplugged, or the other end of the pty closed?)"
        default:
            return nil
        }
    }
}
