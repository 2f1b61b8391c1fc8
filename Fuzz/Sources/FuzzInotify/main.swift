import KevdKernel
import KevdFuzzSupport

/// What one read(2) of an inotify descriptor returned: records are decoded in place, and a record the buffer
/// cannot hold is counted as malformed, never read past.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzInotify(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    guard let start else { return 0 }
    // A copy the exact size of the input, so the address sanitizer catches any read past it.
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 8)
    defer { buffer.deallocate() }
    buffer.copyMemory(from: UnsafeRawBufferPointer(start: start, count: count))
    var decoder = InotifyRecordDecoder(UnsafeRawBufferPointer(buffer))
    var consumed = 0
    while let record = decoder.next() {
        Fuzz.check(!record.name.contains(0), "a name holds a NUL")
        let name = UnsafeRawBufferPointer(record.name)
        if let base = name.baseAddress {
            Fuzz.check(base >= UnsafeRawPointer(buffer.baseAddress!) && base + name.count <= UnsafeRawPointer(buffer.baseAddress!) + count, "a name outside the buffer")
        }
        consumed += 1
    }
    Fuzz.check(decoder.malformedBytes >= 0 && decoder.malformedBytes <= count, "malformed \(decoder.malformedBytes) of \(count)")
    Fuzz.check(consumed * 16 <= count, "more records than the buffer holds")
    return 0
}

@_cdecl("FuzzInotify_main")
public func main(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    Fuzz.runDriver(argc, argv, fuzzInotify)
}
