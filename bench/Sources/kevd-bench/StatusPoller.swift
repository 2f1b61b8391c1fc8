import Glibc
import KevdEvent
import KevdKernel
import Synchronization

/// Asks kevd for `status` every 100 ms until stopped (on a thread of its own: `run`), handing each reply to
/// `take`, which a subclass overrides to keep the figures its benchmark wants. The first failure ends it and is
/// kept in `error`.
class StatusPoller: @unchecked Sendable {
    // @unchecked: the figures are written by the polling thread and read once it has been stopped and joined.
    let client: LineClient
    var samples = 0
    var error: String?
    private let stopping = Atomic<Bool>(false)

    init(client: LineClient) { self.client = client }

    func stop() { stopping.store(true, ordering: .releasing) }

    /// One `status` reply: nil if it was what the benchmark expects, else why not (which ends the polling).
    func take(_ status: JSONValue, reply: String) -> String? { nil }

    func run() {
        while !stopping.load(ordering: .acquiring) {
            do {
                let reply = try client.request(#"{"op":"status"}"#, timeout: 10)
                if let problem = take(try JSONReader.parse(reply), reply: reply) {
                    error = problem
                    return
                }
                samples += 1
            } catch {
                self.error = "\(error)"
                return
            }
            Sleep.nanoseconds(100_000_000)
        }
    }
}
