/// The request's `id`, echoed back unchanged.
///
/// Clients send strings (`"123"`, the description) or numbers (`0`, the Home Assistant integration). The value
/// goes back through the same JSONEncoder, so `"123"`, `0`, `-7` and `12.5` come back byte for byte; unusual
/// spellings of a number come back as the same number in canonical form (`1e3` → `1000`, `12.0` → `12`).
/// Objects, arrays, booleans and null are rejected by the decoder with a type mismatch.
public enum RequestID: Sendable, Equatable, Codable {
    case string(String)
    case integer(Int64)
    case unsigned(UInt64)
    case double(Double)

    public init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let s = try? container.decode(String.self) {
            self = .string(s)
        } else if let i = try? container.decode(Int64.self) {
            self = .integer(i)
        } else if let u = try? container.decode(UInt64.self) {
            self = .unsigned(u)
        } else if let d = try? container.decode(Double.self) {
            self = .double(d)
        } else {
            throw DecodingError.typeMismatch(
                RequestID.self,
                .init(codingPath: decoder.codingPath, debugDescription: "id must be a string or a number"))
        }
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .string(let s): try container.encode(s)
        case .integer(let i): try container.encode(i)
        case .unsigned(let u): try container.encode(u)
        case .double(let d): try container.encode(d)
        }
    }
}
