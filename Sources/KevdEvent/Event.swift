/// One normalized kernel notification: immutable once the loop has stamped it.
///
/// The JSON line form (see `JSONLineEncoder`) writes the fields in declaration order; that order and these
/// names are kevd's public contract, documented in README.md.
public struct Event: Sendable, Equatable {
    /// Gap-free, assigned in order by the loop.
    public let seq: UInt64
    /// Unique forever, stable across replays (a UUIDv7, see `EventID`).
    public let id: EventID
    /// Wall clock (CLOCK_REALTIME) when the loop stamped the event.
    public let time: WallTime
    /// CLOCK_MONOTONIC nanoseconds when the loop stamped the event.
    public let mono: UInt64
    public let source: EventSource
    public let type: String
    /// The ordering key: a path, a devpath, a timer name, a signal name, a component.
    public let key: String
    public let data: EventData

    public init(
        seq: UInt64, id: EventID, time: WallTime, mono: UInt64, source: EventSource, type: String, key: String,
        data: EventData
    ) {
        self.seq = seq
        self.id = id
        self.time = time
        self.mono = mono
        self.source = source
        self.type = type
        self.key = key
        self.data = data
    }
}

/// What a source knows about an event before the loop stamps it with seq, id and clocks.
public struct EventDraft: Sendable, Equatable {
    public var source: EventSource
    public var type: String
    public var key: String
    public var data: EventData

    public init(source: EventSource, type: String, key: String, data: EventData = EventData()) {
        self.source = source
        self.type = type
        self.key = key
        self.data = data
    }
}

/// Where an event came from. Open-ended (clients will emit their own), with the kernel sources as constants.
public struct EventSource: Sendable, Hashable, CustomStringConvertible {
    public let name: String
    public init(_ name: String) { self.name = name }
    public var description: String { name }

    public static let inotify = EventSource("inotify")
    public static let udev = EventSource("udev")
    public static let timer = EventSource("timer")
    public static let signal = EventSource("signal")
    public static let kevd = EventSource("kevd")
}

/// A scalar in an event's `data` object.
public enum EventValue: Sendable, Equatable {
    case string(String)
    case int(Int64)
    case double(Double)
    case bool(Bool)
}

/// The `data` object: ordered fields (the order a source adds them is the order they are written), unique names.
public struct EventData: Sendable, Equatable, Sequence {
    public struct Field: Sendable, Equatable {
        public let name: String
        public let value: EventValue
    }

    public private(set) var fields: [Field]

    public init() { fields = [] }

    /// An empty object with room for `capacity` fields: sources that know their field count avoid regrowth.
    public init(capacity: Int) {
        fields = []
        fields.reserveCapacity(capacity)
    }

    public init(_ pairs: KeyValuePairs<String, EventValue>) {
        fields = []
        fields.reserveCapacity(pairs.count)
        for (name, value) in pairs { self[name] = value }
    }

    public var count: Int { fields.count }
    public var isEmpty: Bool { fields.isEmpty }
    public func makeIterator() -> IndexingIterator<[Field]> { fields.makeIterator() }

    /// Reads a field; setting replaces a field in place or appends a new one. Linear: data objects are small.
    public subscript(name: String) -> EventValue? {
        get { fields.first { $0.name == name }?.value }
        set {
            let index = fields.firstIndex { $0.name == name }
            switch (index, newValue) {
            case (let i?, let v?): fields[i] = Field(name: name, value: v)
            case (let i?, nil): fields.remove(at: i)
            case (nil, let v?): fields.append(Field(name: name, value: v))
            case (nil, nil): break
            }
        }
    }

    /// Appends without checking for an existing field: for sources that build fresh objects on the hot path.
    public mutating func append(_ name: String, _ value: EventValue) {
        fields.append(Field(name: name, value: value))
    }

    public mutating func append(_ name: String, _ value: String) { append(name, .string(value)) }
    public mutating func append(_ name: String, _ value: Int) { append(name, .int(Int64(value))) }
    public mutating func append(_ name: String, _ value: Bool) { append(name, .bool(value)) }

    /// Appends bytes from the kernel (a file name, a udev property) as text. JSON needs valid UTF-8, file names
    /// need not be: invalid sequences become U+FFFD in `name`, and the exact bytes are kept, base64-encoded, in
    /// `name_base64`, so nothing is lost.
    public mutating func appendBytes(_ name: String, _ bytes: some Collection<UInt8>) {
        let text = ByteText(bytes)
        append(name, .string(text.string))
        if !text.isLossless { append(name + "_base64", .string(Base64.encode(bytes))) }
    }
}

/// Text from kernel bytes that may not be UTF-8.
public struct ByteText: Sendable {
    public let string: String
    /// False when invalid UTF-8 was replaced by U+FFFD.
    public let isLossless: Bool

    private init(string: String, isLossless: Bool) {
        self.string = string
        self.isLossless = isLossless
    }

    /// The hot path's entry point (a name in a kernel read buffer): concrete, so no generic dispatch per byte.
    public init(_ bytes: UnsafeBufferPointer<UInt8>) {
        var ascii = true
        for byte in bytes where byte >= 0x80 {
            ascii = false
            break
        }
        // Most names are ASCII: one pass proves them valid, and decoding cannot change them.
        self = ascii ? ByteText(string: String(decoding: bytes, as: UTF8.self), isLossless: true) : ByteText(checking: bytes)
    }

    public init(_ bytes: some Collection<UInt8>) {
        self = bytes.allSatisfy({ $0 < 0x80 })
            ? ByteText(string: String(decoding: bytes, as: UTF8.self), isLossless: true) : ByteText(checking: bytes)
    }

    private init(checking bytes: some Collection<UInt8>) {
        let string = String(decoding: bytes, as: UTF8.self)
        // Decoding repairs invalid sequences with U+FFFD, so the text's bytes equal the input exactly when the
        // input was valid UTF-8.
        self.init(string: string, isLossless: string.utf8.elementsEqual(bytes))
    }
}
