import ModbusCore
import Synchronization

/// Hands the poll loop's results to any number of readers without ever making the loop wait.
///
/// A sequence lock over one preallocated slot: the single writer (the poll thread) makes the sequence odd, copies
/// its working state in, and makes it even again; a reader copies the slot and retries if the sequence moved
/// meanwhile. Publishing is a fixed-size copy: no allocation, no lock, whatever the readers do.
final class SnapshotExchange: @unchecked Sendable {
    /// Layout of the float area, derived from the register map here and nowhere else: these blocks in this order,
    /// each as `count / 2` floats (today basic 26 | energy 26 | demand 3 | history 130).
    static let floatBlocks = [KPM33BMap.basic, KPM33BMap.energy, KPM33BMap.demand, KPM33BMap.history]

    /// Where `block`'s floats live in the float area.
    static func floats(of block: RegisterBlock) -> Range<Int> {
        var offset = 0
        for candidate in floatBlocks {
            let count = Int(candidate.count / 2)
            if candidate == block { return offset..<(offset + count) }
            offset += count
        }
        preconditionFailure("\(block.group) is not a float block of the snapshot")
    }

    // Computed once at first use (start-up), so the poll loop's hot path only reads constants.
    static let basicOffset = floats(of: KPM33BMap.basic).lowerBound
    static let energyOffset = floats(of: KPM33BMap.energy).lowerBound
    static let demandOffset = floats(of: KPM33BMap.demand).lowerBound
    static let historyOffset = floats(of: KPM33BMap.history).lowerBound
    static let floatCount = floatBlocks.reduce(0) { $0 + Int($1.count / 2) }
    /// Parameter words 0x0000…0x0026.
    static let parameterCount = Int(KPM33BMap.parameters.count)

    private let sequence = Atomic<UInt64>(0)
    private let slot: SnapshotState

    init() { slot = SnapshotState() }

    /// Number of publishes so far (a reader's cheap way to see whether anything changed).
    var generation: UInt64 { sequence.load(ordering: .acquiring) / 2 }

    /// Single writer only.
    func publish(_ state: SnapshotState) {
        let s = sequence.load(ordering: .relaxed)
        sequence.store(s &+ 1, ordering: .relaxed)
        atomicMemoryFence(ordering: .releasing)
        slot.copy(from: state)
        sequence.store(s &+ 2, ordering: .releasing)
    }

    /// Copies the latest published state into `into` (reader-owned). Returns the generation copied.
    @discardableResult
    func read(into target: SnapshotState) -> UInt64 {
        while true {
            let before = sequence.load(ordering: .acquiring)
            if before & 1 == 1 {
                sched_yield_compat()
                continue
            }
            target.copy(from: slot)
            atomicMemoryFence(ordering: .acquiring)
            let after = sequence.load(ordering: .relaxed)
            if before == after { return before / 2 }
        }
    }
}

/// Fixed-size, plain-data state of one poll cycle. Allocated once; copied with memcpy-sized loops.
final class SnapshotState {
    struct Header {
        var health: LinkHealth = .starting
        var publishedAt: Int64 = 0
        var relayBits: UInt8 = 0
        /// This board's last relay command opened the relay and it has not been read closed since.
        var relayOpenedByBoard = false
        var statistics = ModbusStatistics()
        /// Values outside their plausible range read so far (`Plausibility`).
        var implausible: UInt64 = 0
        var error: ErrorRecord = ErrorRecord()
        var cycleMicros: UInt32 = 0
    }

    struct ErrorRecord: Equatable {
        /// `.none` when no error happened yet.
        var failure: ModbusFailure? = nil
        var at: Int64 = 0
        var register: UInt16 = 0
    }

    var header = Header()
    let floats = UnsafeMutableBufferPointer<Float>.allocate(capacity: SnapshotExchange.floatCount)
    let parameters = UnsafeMutableBufferPointer<UInt16>.allocate(capacity: SnapshotExchange.parameterCount)
    /// Unix seconds each `RegisterGroup` was last read; 0 = never.
    let readAt = UnsafeMutableBufferPointer<Int64>.allocate(capacity: RegisterGroup.allCases.count)

    init() {
        floats.initialize(repeating: 0)
        parameters.initialize(repeating: 0)
        readAt.initialize(repeating: 0)
    }

    deinit {
        floats.deallocate()
        parameters.deallocate()
        readAt.deallocate()
    }

    func copy(from other: SnapshotState) {
        header = other.header
        UnsafeMutableRawBufferPointer(floats).copyMemory(from: UnsafeRawBufferPointer(other.floats))
        UnsafeMutableRawBufferPointer(parameters).copyMemory(from: UnsafeRawBufferPointer(other.parameters))
        UnsafeMutableRawBufferPointer(readAt).copyMemory(from: UnsafeRawBufferPointer(other.readAt))
    }
}

#if canImport(Glibc)
import Glibc
@inline(__always) func sched_yield_compat() { sched_yield() }
#else
import Darwin
@inline(__always) func sched_yield_compat() { sched_yield() }
#endif
