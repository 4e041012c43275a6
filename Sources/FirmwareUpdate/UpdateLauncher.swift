import Glibc

/// What the packaged `meterext run` does first: run itself, or `exec` an installed version.
public enum LaunchDecision: Equatable, Sendable {
    case runSelf(reason: String)
    /// `trialAttempt` is the start attempt number when the slot is on trial, nil once it is committed.
    case exec(slot: String, path: String, trialAttempt: Int?)
}

/// The launcher half of updates. `/usr/bin/meterext run` calls `launch(stateDirectory:)` before anything else; the
/// version it starts calls `markHealthy` once the API is up and the meter poll loop has completed a cycle, and arms
/// `trialHealthDeadline`. Rollback paths:
///   * the new version crashes or hangs: systemd restarts the service (Restart=always, watchdog, start timeout) and
///     every start on trial is counted here *before* exec; past `max_attempts` the launcher switches back;
///   * the new version runs but never becomes healthy: its own timer calls `revertUnhealthyTrial` and exits;
///   * the slot binary is damaged or cannot be exec'd: the launcher leaves it for the previous version.
/// Wall-clock deadlines are deliberately not used: boards without an RTC start in 1970 and jump on NTP sync.
public enum UpdateLauncher {
    /// Set in the environment of an exec'd slot (to the slot name); a binary started with it never launches again.
    public static let guardVariable = "METEREXT_LAUNCHED_SLOT"

    /// The slot this process was started from, or nil for the packaged binary.
    public static var runningSlot: String? { FileIO.environment(guardVariable) }

    public static func prepare(stateDirectory: String, launchedSlot: String? = UpdateLauncher.runningSlot,
                               verifyHashOnEveryStart: Bool = false,
                               log: @escaping @Sendable (String) -> Void = { _ in }) -> LaunchDecision {
        if let launchedSlot {
            return .runSelf(reason: "started from slot \(launchedSlot)")
        }
        let slots = FirmwareSlots(stateDirectory: stateDirectory, log: log)
        for _ in 0..<4 {
            do {
                if let decision = try decide(slots, verifyHash: verifyHashOnEveryStart) { return decision }
            } catch {
                // The state directory is unusable (read-only, full): the packaged binary is always a working version.
                log("launcher: \(error); running the packaged binary")
                return .runSelf(reason: "launcher error: \(error)")
            }
        }
        return .runSelf(reason: "no installed version is usable")
    }

    /// One decision round; nil means "state changed (rolled back or fell back), decide again".
    private static func decide(_ slots: FirmwareSlots, verifyHash: Bool) throws -> LaunchDecision? {
        guard let current = slots.currentSlot else {
            if FileIO.exists(slots.layout.currentLink) { try slots.abandonCurrent(reason: "current link is invalid") }
            if slots.readTrial() != nil { try slots.clearTrial() }
            return .runSelf(reason: "no installed update")
        }
        if var trial = slots.readTrial() {
            if trial.slot != current {
                try slots.clearTrial() // left over from an interrupted switch or rollback
            } else {
                trial.attempts += 1
                if trial.attempts > trial.maxAttempts {
                    try slots.rollback(reason: "not confirmed healthy after \(trial.maxAttempts) starts")
                    return nil
                }
                if let problem = slots.problem(withSlot: current, checkHash: true) {
                    try slots.rollback(reason: problem)
                    return nil
                }
                // Counted before exec: a version that kills the board at start still uses up its attempts.
                try slots.writeTrial(trial)
                slots.log("starting firmware \(current) on trial, attempt \(trial.attempts) of \(trial.maxAttempts)")
                return .exec(slot: current, path: slots.layout.binaryPath(current), trialAttempt: trial.attempts)
            }
        }
        if let problem = slots.problem(withSlot: current, checkHash: verifyHash) {
            try slots.abandonCurrent(reason: problem)
            return nil
        }
        return .exec(slot: current, path: slots.layout.binaryPath(current), trialAttempt: nil)
    }

    /// Replaces this process with the slot binary (same argv, guard variable set). Returns only if exec failed.
    public static func exec(_ decision: LaunchDecision, arguments: [String] = CommandLine.arguments) -> UpdateError? {
        guard case .exec(let slot, let path, _) = decision else { return nil }
        return replaceProcess(path: path, arguments: arguments, environment: environment(launchedSlot: slot))
    }

    /// `system_restart` and the restart into a freshly installed version: replaces this process (same PID, same
    /// arguments) with a fresh start *through the launcher*. The guard variable is removed, so the launcher decides
    /// again and starts whatever is current now (the new version after an update, the packaged binary after a
    /// rollback), however many updates this process has already been through. Every descriptor is closed on exec,
    /// so the new process can bind the API port again. Returns only if exec failed.
    public static func restartProcess(arguments: [String] = CommandLine.arguments) -> UpdateError {
        replaceProcess(path: "/proc/self/exe", arguments: arguments, environment: environment(launchedSlot: nil))
    }

    /// This process's environment with the guard variable set to `launchedSlot`, or removed when nil.
    static func environment(launchedSlot: String?) -> [String] {
        var out: [String] = []
        var cursor = environ
        while let entry = cursor.pointee {
            let text = String(cString: entry)
            if !text.hasPrefix(guardVariable + "=") { out.append(text) }
            cursor += 1
        }
        if let launchedSlot { out.append(guardVariable + "=" + launchedSlot) }
        return out
    }

    /// Marks every open descriptor above stderr close-on-exec. NIO opens its sockets and epoll descriptors without
    /// CLOEXEC; a listening socket carried over an exec keeps the port bound and the new process gets EADDRINUSE.
    /// Returns how many descriptors were changed.
    @discardableResult
    public static func closeDescriptorsOnExec() -> Int {
        var changed = 0
        for name in FileIO.listDirectory("/proc/self/fd") {
            guard let fd = Int32(name), fd > 2 else { continue }
            let flags = fcntl(fd, F_GETFD)
            if flags >= 0 && flags & FD_CLOEXEC == 0 && fcntl(fd, F_SETFD, flags | FD_CLOEXEC) == 0 { changed += 1 }
        }
        return changed
    }

    private static func replaceProcess(path: String, arguments: [String], environment: [String]) -> UpdateError {
        closeDescriptorsOnExec()
        // Signal dispositions set to "ignore" and a blocked signal mask survive exec: the new process would not
        // stop on SIGTERM until it installed its own handlers (and never, with the signals of a dispatch thread
        // blocked).
        for sig in [SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2] { signal(sig, SIG_DFL) }
        var empty = sigset_t()
        sigemptyset(&empty)
        pthread_sigmask(SIG_SETMASK, &empty, nil)
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        var envp: [UnsafeMutablePointer<CChar>?] = environment.map { strdup($0) } + [nil]
        execve(path, &argv, &envp)
        let code = errno
        for p in argv { free(p) }
        for p in envp { free(p) }
        return UpdateError.io("exec", path, errno: code)
    }

    /// The whole launcher: decide, exec; if exec fails, leave that slot and decide again. Returns (with the reason)
    /// only when this process should run itself.
    public static func launch(stateDirectory: String, arguments: [String] = CommandLine.arguments,
                              log: @escaping @Sendable (String) -> Void = { _ in }) -> LaunchDecision {
        for _ in 0..<4 {
            let decision = prepare(stateDirectory: stateDirectory, log: log)
            guard case .exec(let slot, _, _) = decision, let error = exec(decision, arguments: arguments) else {
                return decision
            }
            log("launcher: cannot start slot \(slot): \(error)")
            try? FirmwareSlots(stateDirectory: stateDirectory, log: log).abandonCurrent(reason: "exec failed: \(error)")
        }
        return .runSelf(reason: "no installed version could be started")
    }

    /// Call once the API answers and the poll loop has completed a cycle. Commits this version if it is on trial.
    /// Returns true when a trial was committed.
    @discardableResult
    public static func markHealthy(stateDirectory: String, runningSlot: String? = UpdateLauncher.runningSlot,
                                   log: @escaping @Sendable (String) -> Void = { _ in }) throws -> Bool {
        try FirmwareSlots(stateDirectory: stateDirectory, log: log).commit(runningSlot: runningSlot)
    }

    /// How long this process may take to become healthy, if it runs on trial; nil when there is nothing to watch.
    public static func trialHealthDeadline(stateDirectory: String,
                                           runningSlot: String? = UpdateLauncher.runningSlot) -> Duration? {
        guard let runningSlot, let trial = FirmwareSlots(stateDirectory: stateDirectory).activeTrial(),
              trial.slot == runningSlot else { return nil }
        return .seconds(trial.healthSeconds)
    }

    /// Called by the run command when `trialHealthDeadline` has passed: if this version is still on trial it is
    /// rolled back and true is returned — the caller then exits so systemd restarts into the previous version.
    @discardableResult
    public static func revertUnhealthyTrial(stateDirectory: String,
                                            runningSlot: String? = UpdateLauncher.runningSlot,
                                            log: @escaping @Sendable (String) -> Void = { _ in }) -> Bool {
        let slots = FirmwareSlots(stateDirectory: stateDirectory, log: log)
        guard let runningSlot, let trial = slots.activeTrial(), trial.slot == runningSlot else { return false }
        do {
            try slots.rollback(reason: "not healthy within \(trial.healthSeconds) s of starting")
            return true
        } catch {
            log("rollback failed: \(error)") // the attempt counter still reverts it on the next starts
            return true
        }
    }
}
