/// evdev key and switch names: `KEY_POWER` is `power`, `SW_LID` is `lid`, `BTN_LEFT` is `btn_left` (buttons keep
/// their prefix: `left` is the arrow key). Here rather than in the input source because the configuration's
/// `[input] keys` are checked against it when the file is read.
///
/// The table (InputNames+Table.swift) is generated from the kernel's linux/input-event-codes.h: for each code
/// the first name defined for it, so an alias (KEY_SCREENLOCK for KEY_COFFEE) names its code's first name.
public enum InputNames {
    public enum Kind: Sendable, Equatable { case key, `switch` }

    /// A name's event kind and code; nil for a name the kernel does not define.
    public static func code(of name: String) -> (kind: Kind, code: UInt16)? { byName[name] }

    /// The kernel's name of a key code (`KEY_POWER`); nil for a code without one.
    public static func keyName(_ code: UInt16) -> String? { keyNames[code] }
    public static func switchName(_ code: UInt16) -> String? { switchNames[code] }

    /// The configuration's spelling of a kernel name: lower case, without `KEY_` or `SW_`.
    public static func shortName(_ kernelName: String) -> String {
        var name = Substring(kernelName)
        if name.hasPrefix("KEY_") { name = name.dropFirst(4) } else if name.hasPrefix("SW_") { name = name.dropFirst(3) }
        return name.lowercased()
    }

    private static let keyNames: [UInt16: String] = Dictionary(
        keyTable.map { ($0.0, $0.1.description) }, uniquingKeysWith: { first, _ in first })
    private static let switchNames: [UInt16: String] = Dictionary(
        switchTable.map { ($0.0, $0.1.description) }, uniquingKeysWith: { first, _ in first })
    private static let byName: [String: (kind: Kind, code: UInt16)] = {
        var names: [String: (kind: Kind, code: UInt16)] = [:]
        for (code, name) in keyTable { names[shortName(name.description)] = (.key, code) }
        // A switch and a key of the same short name: none today; the switch would win.
        for (code, name) in switchTable { names[shortName(name.description)] = (.switch, code) }
        return names
    }()
}
