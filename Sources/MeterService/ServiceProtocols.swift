/// What the API needs from the board's settings store. The real one lives in DeviceState; tests use
/// `InMemoryDeviceSettings` (MeterTestSupport).
public protocol DeviceSettings: AnyObject, Sendable {
    /// Stores the meter's decryption key (already validated: 32 lowercase hex digits).
    /// Implementations must never log or echo it.
    func setMeterKey(_ key: String) throws
    /// Restores every setting to its factory default. Called after the reply was written, off the HTTP event loop
    /// (it may wait for the WiFi).
    func factoryReset() throws
}

/// Restarting the service (systemd restarts it). Called after the reply was written, off the HTTP event loop
/// (one after-reply queue): return quickly all the same (schedule the restart, don't wait for it).
public protocol SystemControl: AnyObject, Sendable {
    func restartService()
    /// `system_restart`: reboot the board where the service may (under systemd on a board); otherwise restart the
    /// service. Defaults to `restartService()`.
    func rebootBoard()
}

extension SystemControl {
    public func rebootBoard() { restartService() }
}

/// The address of the interface that carries the default route.
public struct IPInfo: Sendable, Equatable {
    public var interface: String
    public var address: String
    public var netmask: String
    /// Empty when there is no default route.
    public var gateway: String

    public init(interface: String, address: String, netmask: String, gateway: String) {
        self.interface = interface
        self.address = address
        self.netmask = netmask
        self.gateway = gateway
    }
}

public protocol NetworkInfo: Sendable {
    /// nil when no interface has an IPv4 address.
    func ipInfo() -> IPInfo?
    /// `aa:bb:cc:dd:ee:ff` of the active interface, nil when unknown.
    func macAddress() -> String?
}

/// Static facts `system_status` reports.
public struct DeviceIdentity: Sendable, Equatable {
    public var model: String
    public var softwareVersion: String
    public var hardwareVersion: String

    public static let defaultModel = "MeterExtension #1 (meterext KPM33B)"

    public init(model: String = DeviceIdentity.defaultModel, softwareVersion: String, hardwareVersion: String) {
        self.model = model
        self.softwareVersion = softwareVersion
        self.hardwareVersion = hardwareVersion
    }
}
