// Fuzz target: the configuration and state loader `StateStore(directory:)`, fed arbitrary `config.json` and
// `state.json` files (and a leftover temporary file, as a power cut during a write leaves one).
//
// Input: one flags byte (which files exist), a 16-bit length, the config file's bytes, then the state file's bytes.
// The directory lives on tmpfs (`$FUZZ_TMPDIR`, default /dev/shm) and is emptied after every input.
// Invariants: the store loads or throws — it never crashes; once it loaded, what it wrote back loads again without a
// warning and gives the same configuration and state (a bad file is never persisted, and a start after a power cut
// finds a loadable store); a file that did not load was set aside, not silently overwritten; no sanitizer report.
import DeviceState
import Glibc

private let directory: String = {
    let base = getenv("FUZZ_TMPDIR").map { String(cString: $0) } ?? "/dev/shm"
    let dir = "\(base)/meterext-fuzz-state-\(getpid())"
    mkdir(dir, 0o700)
    // libFuzzer ends with exit(): take the (emptied) directory away then.
    atexit { emptyDirectory(); rmdir(directory) }
    return dir
}()

private func writeFile(_ name: String, _ bytes: UnsafeRawBufferPointer) {
    let fd = open("\(directory)/\(name)", O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    fuzzCheck(fd >= 0, "cannot create \(name)")
    if bytes.count > 0 { fuzzCheck(write(fd, bytes.baseAddress, bytes.count) == bytes.count, "short write") }
    close(fd)
}

private func entries() -> [String] {
    guard let dir = opendir(directory) else { return [] }
    defer { closedir(dir) }
    var names: [String] = []
    while let e = readdir(dir) {
        let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if name != "." && name != ".." { names.append(name) }
    }
    return names
}

private func emptyDirectory() {
    for name in entries() { unlink("\(directory)/\(name)") }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzStateStore(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    var r = FuzzReader(UnsafeRawBufferPointer(start: data, count: size))
    let flags = r.byte()
    let configLength = Int(r.u16())
    let config = r.take(configLength)
    let state = r.rest()
    emptyDirectory()
    defer { emptyDirectory() }
    if flags & 1 == 0 { writeFile(StateStore.configFileName, config) }
    if flags & 2 == 0 { writeFile(StateStore.stateFileName, state) }
    if flags & 4 != 0 { writeFile(".\(StateStore.configFileName).tmp-AbC123", config) }

    let first: StateStore
    do {
        first = try StateStore(directory: directory)
    } catch {
        return 0 // reported, not crashed
    }
    let malformed = first.loadWarnings.contains { $0.contains("malformed") || $0.contains("cannot read") }
    let asideExists = entries().contains { $0.contains(".corrupt-") }
    fuzzCheck(malformed == asideExists, "warnings \(first.loadWarnings) but set-aside files: \(entries())")
    fuzzCheck(!entries().contains { $0.contains(".tmp-") }, "a temporary file survived loading: \(entries())")

    let second: StateStore
    do {
        second = try StateStore(directory: directory)
    } catch {
        fuzzFail("the store written back does not load: \(error)")
    }
    fuzzCheck(second.loadWarnings.isEmpty, "reloading what was written warns: \(second.loadWarnings)")
    fuzzCheck(second.config == first.config, "configuration changed across a reload")
    fuzzCheck(second.state == first.state, "state changed across a reload")
    return 0
}
