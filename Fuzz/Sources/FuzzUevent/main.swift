import KevdDeviceEvents
import KevdEvent
import KevdFuzzSupport
import KevdKernel

/// One kernel uevent datagram (`ACTION@DEVPATH\0KEY=VALUE\0…`): rejected, or a device whose event (as the udev
/// source makes it) survives the journal.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzUevent(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    guard let start else { return 0 }
    guard let device = UeventDecoder.decode(UnsafeBufferPointer(start: start, count: count)) else { return 0 }
    Fuzz.check(!device.action.isEmpty && device.devpath.hasPrefix("/") && device.subsystem != nil, "an incomplete device")
    Fuzz.checkRoundTrip(Fuzz.stamp(UdevDeviceEvent.draft(device)))
    return 0
}

@_cdecl("FuzzUevent_main")
public func main(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    Fuzz.runDriver(argc, argv, fuzzUevent)
}
