import Platform
import FoundationEssentials
import Glibc
import MeterHardware

/// One supported wiring, read from `NAME.json` in a profile directory (`meterext run --board NAME`).
/// The profile says where the meter's bus is and how the transceiver is driven; CLI flags and the run config file
/// may override `serial` and `direction`.
public struct BoardProfile: Sendable, Equatable, Decodable {
    public var name: String
    public var description: String
    /// The boards this wiring was written and checked for, in words ("Raspberry Pi 4 Model B").
    public var boards: [String]
    public var serial: String
    public var direction: DirectionMode
    public var statusLED: GPIOLineSpec?
    public var setupButton: GPIOLineSpec?
    /// Base name of the device-tree overlay this wiring needs (`overlays/NAME.dts`), or nil.
    public var overlay: String?
    /// Lines `install-overlay.sh` adds to the boot partition's config.txt, in order.
    public var configTxt: [String]

    enum CodingKeys: String, CodingKey, CaseIterable {
        case name, description, boards, serial, direction, overlay
        case statusLED = "status_led"
        case setupButton = "setup_button"
        case configTxt = "config_txt"
    }

    public init(
        name: String, description: String, boards: [String], serial: String, direction: DirectionMode,
        statusLED: GPIOLineSpec? = nil, setupButton: GPIOLineSpec? = nil, overlay: String? = nil, configTxt: [String] = []
    ) {
        self.name = name
        self.description = description
        self.boards = boards
        self.serial = serial
        self.direction = direction
        self.statusLED = statusLED
        self.setupButton = setupButton
        self.overlay = overlay
        self.configTxt = configTxt
    }

    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(in: decoder, known: CodingKeys.allCases.map(\.rawValue))
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        description = try c.decode(String.self, forKey: .description)
        boards = try c.decode([String].self, forKey: .boards)
        serial = try c.decode(String.self, forKey: .serial)
        direction = try c.decodeParsed(DirectionMode.init(parsing:), forKey: .direction)
        statusLED = try c.decodeParsedIfPresent(GPIOLineSpec.init(parsing:), forKey: .statusLED)
        setupButton = try c.decodeParsedIfPresent(GPIOLineSpec.init(parsing:), forKey: .setupButton)
        overlay = try c.decodeIfPresent(String.self, forKey: .overlay)
        configTxt = try c.decodeIfPresent([String].self, forKey: .configTxt) ?? []
        guard serial.hasPrefix("/dev/") else {
            throw DecodingError.dataCorruptedError(forKey: .serial, in: c, debugDescription: "'\(serial)' is not a /dev path")
        }
        if let line = configTxt.first(where: { $0.contains("\n") || $0.hasPrefix("[") }) {
            // A section header would silently scope every following config.txt line to one board model.
            throw DecodingError.dataCorruptedError(
                forKey: .configTxt, in: c, debugDescription: "'\(line)' is not a single config.txt setting")
        }
    }
}

public enum BoardProfileError: Error, CustomStringConvertible, Equatable {
    case unknownBoard(name: String, available: [String], searched: [String])
    case invalidName(String)
    case malformed(file: String, reason: String)
    case nameMismatch(file: String, declared: String)
    case unreadable(FileReadError)

    public var description: String {
        switch self {
        case .unknownBoard(let name, let available, let searched):
            let list = available.isEmpty ? "none found" : available.joined(separator: ", ")
            return "unknown board '\(name)'; available boards: \(list) (searched \(searched.joined(separator: ", ")))"
        case .invalidName(let name):
            return "invalid board name '\(name)' (letters, digits, '-' and '_' only)"
        case .malformed(let file, let reason):
            return "malformed board profile \(file): \(reason)"
        case .nameMismatch(let file, let declared):
            return "board profile \(file) declares name '\(declared)', which does not match its file name"
        case .unreadable(let error):
            return error.description
        }
    }
}

/// Finds profiles by name in an ordered list of directories; the first directory holding `NAME.json` wins, so an
/// installer's `/etc/meterext/boards/NAME.json` replaces the packaged one without editing files dpkg owns.
public struct BoardProfileLoader: Sendable {
    /// Installed locations, most specific first. Development runs append the repository's `board/profiles`.
    public static let installedSearchPath = ["/etc/meterext/boards", "/usr/share/meterext/boards"]

    public let searchPath: [String]

    public init(searchPath: [String] = BoardProfileLoader.installedSearchPath) {
        self.searchPath = searchPath
    }

    /// Names of all profiles found in any directory of the search path, sorted, without duplicates.
    public func availableNames() -> [String] {
        var names = Set<String>()
        for directory in searchPath {
            for file in (try? listDirectory(directory)) ?? [] where file.hasSuffix(".json") && !file.hasPrefix(".") {
                names.insert(String(file.dropLast(5)))
            }
        }
        return names.sorted()
    }

    /// The path `load(name)` would read, or nil when no directory has the profile.
    public func path(for name: String) -> String? {
        searchPath.lazy.map { "\($0)/\(name).json" }.first { access($0, F_OK) == 0 }
    }

    public func load(_ name: String) throws(BoardProfileError) -> BoardProfile {
        // The name becomes part of a path: refuse anything that could climb out of the profile directories.
        guard !name.isEmpty, name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") })
        else { throw .invalidName(name) }
        guard let file = path(for: name) else {
            throw .unknownBoard(name: name, available: availableNames(), searched: searchPath)
        }
        let data: Data
        do { data = try readConfigFile(file) } catch { throw .unreadable(error) }
        let profile = try Self.decode(data, file: file)
        guard profile.name == name else { throw .nameMismatch(file: file, declared: profile.name) }
        return profile
    }

    public static func decode(_ data: Data, file: String) throws(BoardProfileError) -> BoardProfile {
        do { return try JSONDecoder().decode(BoardProfile.self, from: data) } catch {
            throw .malformed(file: file, reason: describe(error))
        }
    }
}
