/// Names that become file names under the state directory: a named subscription's, a rule's and a forwarder's
/// stored positions. Letters, digits, `.`, `_` and `-`, 1 to 64 bytes, not starting with a dot: no path
/// separator, no hidden or special file, and the same name means the same file everywhere.
public enum PositionName {
    public static func isValid(_ name: String) -> Bool {
        guard (1...64).contains(name.utf8.count), name.first != "." else { return false }
        return name.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x2E || c == 0x5F
                || c == 0x2D
        }
    }
}
