/// A growable byte buffer for the hot path: writers check capacity once per event, then store through a raw
/// pointer. Sinks keep one and reuse it, so encoding an event allocates nothing once the buffer has grown.
public final class ByteBuffer {
    public private(set) var base: UnsafeMutablePointer<UInt8>
    public private(set) var count = 0
    public private(set) var capacity: Int

    public init(capacity: Int = 64 * 1024) {
        self.capacity = max(capacity, 64)
        base = .allocate(capacity: self.capacity)
    }

    deinit { base.deallocate() }

    public var isEmpty: Bool { count == 0 }

    /// The bytes written so far.
    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }

    /// Makes room for at least `additional` more bytes and returns where they go; `commit` then says how many
    /// were written.
    @inline(__always)
    public func reserve(_ additional: Int) -> UnsafeMutablePointer<UInt8> {
        if count + additional > capacity { grow(to: count + additional) }
        return base + count
    }

    @inline(__always)
    public func commit(_ written: Int) {
        precondition(count + written <= capacity)
        count += written
    }

    public func append(_ bytes: UnsafeRawBufferPointer) {
        let destination = reserve(bytes.count)
        if let source = bytes.baseAddress { UnsafeMutableRawPointer(destination).copyMemory(from: source, byteCount: bytes.count) }
        count += bytes.count
    }

    /// Drops the first `n` bytes (what a partial `write` sent), keeping the rest in order.
    public func removeFirst(_ n: Int) {
        precondition(n <= count)
        if n < count { (base).update(from: base + n, count: count - n) }
        count -= n
    }

    /// Empties the buffer; gives memory back when it grew past `shrinkAbove` (a burst should not pin it).
    public func removeAll(shrinkAbove: Int = 4 * 1024 * 1024) {
        count = 0
        if capacity > shrinkAbove {
            base.deallocate()
            capacity = 64 * 1024
            base = .allocate(capacity: capacity)
        }
    }

    private func grow(to needed: Int) {
        var newCapacity = capacity * 2
        while newCapacity < needed { newCapacity *= 2 }
        let new = UnsafeMutablePointer<UInt8>.allocate(capacity: newCapacity)
        new.initialize(from: base, count: count)
        base.deallocate()
        base = new
        capacity = newCapacity
    }
}
