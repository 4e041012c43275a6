/// Everything the update and transfer commands need from the board; the run command fills it from its options.
public struct UpdateConfiguration: Sendable {
    public var stateDirectory: String
    /// Public keys (`*.pub`) trusted to sign update images.
    public var keysDirectory: String
    /// CA files that the `cert` field of commands names.
    public var certificateDirectory: String
    /// Development boards only: accept images without a signature (logged as a warning on every install).
    public var allowUnsigned: Bool
    public var architecture: String
    public var maxImageBytes: Int64
    public var maxDownloadBytes: Int64
    public var maxPostMessageBytes: Int
    public var maxPostReplyBytes: Int
    public var connectTimeoutSeconds: Int
    public var lowSpeedBytesPerSecond: Int
    public var lowSpeedSeconds: Int
    public var postTimeoutSeconds: Int
    /// Starts a new version may take to report healthy before the launcher rolls it back.
    public var maxStartAttempts: Int
    /// Seconds a new version may run without becoming healthy before it rolls itself back.
    public var healthDeadlineSeconds: Int
    /// The version this board runs when no installed update is current (the packaged binary's version). An image
    /// older than the committed version is refused (`downgrade`); see `allowDowngrade`.
    public var packagedVersion: String?
    /// Install an image older than the committed version. Only the board's own CLI sets this
    /// (`meterext image install --allow-downgrade`); the API never does.
    public var allowDowngrade = false
    /// Most bytes the downloads folder (`download_file`) may hold in total.
    public var downloadsQuotaBytes: Int64 = 256 << 20
    /// Refuses outgoing requests to loopback, link-local and the board's own addresses. Tests of the transfer
    /// code itself (servers on 127.0.0.1) turn it off; the service and the CLI never do.
    public var outgoingPolicy = OutgoingAddressPolicy.board
    public var log: @Sendable (String) -> Void
    /// Called (from a background thread) after a new version has been switched in; the run command should send
    /// any pending reply, then exit so systemd starts the new version (Restart=always).
    public var onInstalled: @Sendable (_ slot: String) -> Void

    public init(stateDirectory: String, keysDirectory: String = "/etc/meterext/keys",
                certificateDirectory: String? = nil, allowUnsigned: Bool = false,
                architecture: String = UpdateImage.hostArchitecture, maxImageBytes: Int64 = 64 << 20,
                maxDownloadBytes: Int64 = 64 << 20, maxPostMessageBytes: Int = 64 << 10,
                maxPostReplyBytes: Int = 4096, connectTimeoutSeconds: Int = 15, lowSpeedBytesPerSecond: Int = 64,
                lowSpeedSeconds: Int = 30, postTimeoutSeconds: Int = 30, maxStartAttempts: Int = 3,
                healthDeadlineSeconds: Int = 300, log: @escaping @Sendable (String) -> Void = { _ in },
                onInstalled: @escaping @Sendable (String) -> Void = { _ in }) {
        self.stateDirectory = stateDirectory
        self.keysDirectory = keysDirectory
        self.certificateDirectory = certificateDirectory ?? stateDirectory + "/certs"
        self.allowUnsigned = allowUnsigned
        self.architecture = architecture
        self.maxImageBytes = maxImageBytes
        self.maxDownloadBytes = maxDownloadBytes
        self.maxPostMessageBytes = maxPostMessageBytes
        self.maxPostReplyBytes = maxPostReplyBytes
        self.connectTimeoutSeconds = connectTimeoutSeconds
        self.lowSpeedBytesPerSecond = lowSpeedBytesPerSecond
        self.lowSpeedSeconds = lowSpeedSeconds
        self.postTimeoutSeconds = postTimeoutSeconds
        self.maxStartAttempts = maxStartAttempts
        self.healthDeadlineSeconds = healthDeadlineSeconds
        self.log = log
        self.onInstalled = onInstalled
    }

    var imagePolicy: ImagePolicy {
        ImagePolicy(keysDirectory: keysDirectory, allowUnsigned: allowUnsigned, architecture: architecture,
                    maxImageBytes: maxImageBytes)
    }

    func transferLimits(maxBytes: Int64, totalTimeout: Int = 0) -> TransferLimits {
        TransferLimits(maxBytes: maxBytes, connectTimeoutSeconds: connectTimeoutSeconds,
                       lowSpeedBytesPerSecond: lowSpeedBytesPerSecond, lowSpeedSeconds: lowSpeedSeconds,
                       totalTimeoutSeconds: totalTimeout, addressPolicy: outgoingPolicy)
    }

    var certificates: CertificateStore { CertificateStore(directory: certificateDirectory) }
}
