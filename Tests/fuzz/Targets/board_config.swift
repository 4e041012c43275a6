// Fuzz target: the installer-facing JSON loaders of BoardSupport — the run config file (`RunConfigFile.decode`,
// /etc/meterext/meterext.json) and board profiles (`BoardProfileLoader.decode`, boards/NAME.json) — fed the same
// arbitrary file.
//
// Invariants: each decoder returns a value or throws its own error type with a non-empty message — never crashes;
// a returned value satisfies the validation the loaders promise (KPM33B baud rates, addresses 1–247, absolute state
// directory, /dev serial path, single-line config.txt settings without section headers); no sanitizer report.
import BoardSupport
import FoundationEssentials

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzBoardConfig(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = Data(UnsafeBufferPointer(start: data, count: size))
    do {
        let c = try RunConfigFile.decode(bytes, file: "/etc/meterext/meterext.json")
        if let baud = c.baud { fuzzCheck(RunConfigFile.supportedBauds.contains(baud), "accepted baud \(baud)") }
        if let a = c.address { fuzzCheck((1...247).contains(a), "accepted address \(a)") }
        if let d = c.stateDir { fuzzCheck(d.hasPrefix("/"), "accepted relative state_dir \(d)") }
        if let l = c.listen { fuzzCheck((1...65535).contains(l.port) && !l.host.isEmpty, "accepted listen \(l)") }
    } catch {
        fuzzCheck(!error.description.isEmpty, "empty error message")
    }
    do {
        let p = try BoardProfileLoader.decode(bytes, file: "/usr/share/meterext/boards/fuzz.json")
        fuzzCheck(p.serial.hasPrefix("/dev/"), "accepted serial \(p.serial)")
        fuzzCheck(!p.configTxt.contains { $0.contains("\n") || $0.hasPrefix("[") }, "accepted config.txt \(p.configTxt)")
    } catch {
        fuzzCheck(!error.description.isEmpty, "empty error message")
    }
    return 0
}
