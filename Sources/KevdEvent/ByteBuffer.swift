/// A growable byte buffer for the hot path: writers check capacity once per event, then store through a raw
/// pointer. Sinks keep one and reuse it, so encoding an event allocates nothing once the buffer has grown.
///
/// Consuming from the front (`removeFirst`, after a partial `write`) only moves a read offset; the unread bytes
/// are moved down once, when more room is needed, so draining a large buffer in many small writes stays linear.
public final class ByteBuffer {
    private var storage: UnsafeMutablePointer<UInt8>
    private var start = 0
    private var end = 0
    public private(set) var capacity: Int

    public init(capacity: Int = 64 * 1024) {
        self.capacity = max(capacity, 64)
        storage = .allocate(capacity: self.capacity)
    }

    deinit { storage.deallocate() }

    /// The first unread byte. Offsets relative to it stay valid across `reserve`, which may move the bytes.
    public var base: UnsafeMutablePointer<UInt8> { storage + start }
    public var count: Int { end - start }
    public var isEmpty: Bool { end == start }

    /// The unread bytes.
    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: storage + start, count: end - start) }

    /// Makes room for at least `additional` more bytes and returns where they go; `commit` then says how many
    /// were written.
    @inline(__always)
    public func reserve(_ additional: Int) -> UnsafeMutablePointer<UInt8> {
        if end + additional > capacity { makeRoom(additional) }
        return storage + end
    }

    @inline(__always)
    public func commit(_ written: Int) {
        precondition(end + written <= capacity)
        end += written
    }

    public func append(_ bytes: UnsafeRawBufferPointer) {
        let destination = reserve(bytes.count)
        if let source = bytes.baseAddress {
            UnsafeMutableRawPointer(destination).copyMemory(from: source, byteCount: bytes.count)
        }
        end += bytes.count
    }

    /// Drops the first `n` unread bytes (what a partial `write` sent).
    public func removeFirst(_ n: Int) {
        precondition(n <= count)
        start += n
        if start == end {
            start = 0
            end = 0
        }
    }

    /// Empties the buffer; gives memory back when it grew past `shrinkAbove` (a burst should not pin it).
    public func removeAll(shrinkAbove: Int = 4 * 1024 * 1024) {
        start = 0
        end = 0
        if capacity > shrinkAbove {
            storage.deallocate()
            capacity = 64 * 1024
            storage = .allocate(capacity: capacity)
        }
    }

    private func makeRoom(_ additional: Int) {
        let live = end - start
        if start > 0 && live + additional <= capacity && start >= live {
            // Enough room once the consumed front is reclaimed, and the move is cheap (less to move than was freed).
            storage.update(from: storage + start, count: live)
        } else {
            var newCapacity = capacity * 2
            while newCapacity < live + additional { newCapacity *= 2 }
            let new = UnsafeMutablePointer<UInt8>.allocate(capacity: newCapacity)
            new.initialize(from: storage + start, count: live)
            storage.deallocate()
            storage = new
            capacity = newCapacity
        }
        start = 0
        end = live
    }
}
