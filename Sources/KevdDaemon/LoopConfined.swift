/// A reference to an object that belongs to the loop thread (the pipeline), carried by a closure that other
/// threads hold and post to the loop's inbox.
///
/// Only the work the inbox runs (on the loop thread) may use `value`; other threads only carry the reference
/// (retain and release are atomic). The compiler cannot see that the inbox runs its work on the loop, hence the
/// claim.
struct LoopConfined<Value: AnyObject>: @unchecked Sendable {
    // @unchecked: `value` is used only on the loop thread, inside work `LoopInbox.post` runs there.
    let value: Value
}
