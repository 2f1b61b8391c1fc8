import KevdSpec
import KevdEvent

/// The fields of a `subscribe` request, checked (docs/PROTOCOL.md). Pure: permissions, the per-uid limit, names
/// in use and where the journal starts are the server's (Server+Subscriptions.swift), which calls these in the
/// order the errors are reported: filter, name, from.
enum SubscribeRequest {
    /// Where a subscription starts, as the client asked.
    enum From: Equatable {
        /// Only events published from now on.
        case new
        /// Everything the journal still holds.
        case all
        case time(WallTime)
        case seq(UInt64)
    }

    /// `filter`: the terms as written (compiled, with any source restriction, by the caller).
    static func terms(_ value: JSONValue) -> Result<[String], RequestError> {
        var terms: [String] = []
        if let f = value["filter"] {
            guard let array = f.arrayValue else { return .failure("\"filter\" must be a list of terms") }
            for term in array {
                guard let text = term.stringValue else { return .failure("filter terms must be strings") }
                terms.append(text)
            }
        }
        return .success(terms)
    }

    /// `name`: a valid position name, or nil for an anonymous subscription.
    static func name(_ value: JSONValue) -> Result<String?, RequestError> {
        guard let n = value["name"] else { return .success(nil) }
        guard let text = n.stringValue, PositionName.isValid(text) else {
            return .failure("\"name\" must be 1-64 letters, digits, '.', '_' or '-'")
        }
        return .success(text)
    }

    /// `from`: nil when absent (a named subscription then resumes after its stored position).
    static func from(_ value: JSONValue) -> Result<From?, RequestError> {
        guard let from = value["from"] else { return .success(nil) }
        if let text = from.stringValue {
            switch text {
            case "new": return .success(.new)
            case "all": return .success(.all)
            default:
                guard let time = WallTime(rfc3339: text) else {
                    return .failure("\"from\" must be \"new\", \"all\", a seq or an RFC 3339 time")
                }
                return .success(.time(time))
            }
        } else if let seq = from.uint64Value {
            return .success(.seq(seq))
        } else {
            return .failure("\"from\" must be \"new\", \"all\", a seq or an RFC 3339 time")
        }
    }
}
