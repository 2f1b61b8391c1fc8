/// The server, carried weakly through the loop's inbox: `LoopInbox.post` takes `@Sendable` closures, because
/// other threads post to it too, and `Server` is not Sendable (it lives on the loop thread alone).
///
/// @unchecked Sendable: the box is made on the loop thread and may pass through another thread untouched (the
/// position store's worker, which posts the completion of a store); `server` is read only inside work the inbox
/// runs on the loop thread, the one thread that touches the server. Loading a weak reference is atomic in the
/// Swift runtime, so the copy on the other thread is safe.
struct LoopBound: @unchecked Sendable {
    weak var server: Server?
}
