/// A configuration problem, located in its file: printed as `file:line:col: message`, like a compiler.
public struct ConfigError: Error, Equatable, CustomStringConvertible {
    public let file: String
    /// 1-based; 0 when the problem has no place in the file (it could not be read).
    public let line: Int
    public let column: Int
    public let message: String

    public init(file: String, line: Int, column: Int, message: String) {
        self.file = file
        self.line = line
        self.column = column
        self.message = message
    }

    public var description: String {
        line > 0 ? "\(file):\(line):\(column): \(message)" : "\(file): \(message)"
    }
}
