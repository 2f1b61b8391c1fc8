import CKevdShim
import Glibc

/// An epoll instance (`epoll_create1`, `epoll_ctl`, `epoll_wait`).
public final class Epoll {
    public struct Events: OptionSet, Sendable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        public static let readable = Events(rawValue: kevd_EPOLLIN)
        public static let writable = Events(rawValue: kevd_EPOLLOUT)
        public static let error = Events(rawValue: kevd_EPOLLERR)
        public static let hangup = Events(rawValue: kevd_EPOLLHUP)
        public static let readHangup = Events(rawValue: kevd_EPOLLRDHUP)
    }

    /// The ready list of one `epoll_wait`, reused across calls so waiting allocates nothing.
    public struct ReadyList {
        public let capacity: Int
        var events: [UInt32]
        var data: [UInt64]
        public internal(set) var count = 0

        public init(capacity: Int = 256) {
            self.capacity = min(capacity, 256)
            events = Array(repeating: 0, count: self.capacity)
            data = Array(repeating: 0, count: self.capacity)
        }

        public subscript(index: Int) -> (events: Events, data: UInt64) {
            (Events(rawValue: events[index]), data[index])
        }
    }

    public let fd: OwnedFD

    public init() throws {
        fd = OwnedFD(try syscall("epoll_create1") { kevd_epoll_create() })
    }

    public func add(_ target: Int32, events: Events, data: UInt64) throws {
        try syscall("epoll_ctl(ADD)") { kevd_epoll_ctl(fd.rawValue, EPOLL_CTL_ADD, target, events.rawValue, data) }
    }

    public func modify(_ target: Int32, events: Events, data: UInt64) throws {
        try syscall("epoll_ctl(MOD)") { kevd_epoll_ctl(fd.rawValue, EPOLL_CTL_MOD, target, events.rawValue, data) }
    }

    public func remove(_ target: Int32) throws {
        try syscall("epoll_ctl(DEL)") { kevd_epoll_ctl(fd.rawValue, EPOLL_CTL_DEL, target, 0, 0) }
    }

    /// Waits up to `timeoutMilliseconds` (-1: forever). An interrupted wait returns an empty list.
    public func wait(into list: inout ReadyList, timeoutMilliseconds: Int32) throws {
        let capacity = Int32(list.capacity)
        let epfd = fd.rawValue
        let n = list.events.withUnsafeMutableBufferPointer { events in
            list.data.withUnsafeMutableBufferPointer { data in
                kevd_epoll_wait(epfd, events.baseAddress, data.baseAddress, capacity, timeoutMilliseconds)
            }
        }
        if n < 0 {
            if errno == EINTR {
                list.count = 0
                return
            }
            throw SyscallError(call: "epoll_wait", errno: .init(rawValue: errno))
        }
        list.count = Int(n)
    }
}
