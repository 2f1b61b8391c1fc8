import CKevdShim
import Glibc
import KevdSpec
import KevdKernel
import Logging

/// The listening socket: binding it (or serving one systemd passed), making room for `max_clients` under
/// RLIMIT_NOFILE, accepting, and staying out of a busy loop when the fds run out.
extension Server {
    /// fds kevd keeps for itself beyond its clients: journal segments and readers, rule runs' pipes, sources.
    static let ownFDs = 256

    /// `max_clients` connections must leave kevd the fds it needs for itself. The usual soft RLIMIT_NOFILE (1024,
    /// also under systemd) is below the default max_clients plus that, so the soft limit is raised as far as
    /// needed, within the hard limit; if that is not enough, kevd says so at start rather than at EMFILE.
    static func makeRoomForClients(_ maxClients: Int, logger: Logger) {
        let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
        let wanted = rlim_t(maxClients + ownFDs)
        var limit = rlimit()
        guard getrlimit(resource, &limit) == 0, limit.rlim_cur < wanted else { return }
        var raised = limit
        raised.rlim_cur = min(wanted, limit.rlim_max)
        if setrlimit(resource, &raised) == 0 { limit = raised }
        if limit.rlim_cur < wanted {
            logger.warning(
                "[server] max_clients leaves kevd too few file descriptors: raise LimitNOFILE or lower max_clients",
                metadata: ["max_clients": "\(maxClients)", "RLIMIT_NOFILE": "\(limit.rlim_cur)", "needed": "\(wanted)"])
        }
    }

    /// The group of a socket file someone else bound (systemd's `SocketGroup=`): "the socket's group" in the
    /// default access rule.
    static func fileGroup(_ path: String?) -> UInt32? {
        guard let path else { return nil }
        var st = stat()
        return lstat(path, &st) == 0 ? st.st_gid : nil
    }

    /// Binds the socket, replacing a stale file left by a kevd that died, but never stealing a live one.
    static func listen(at path: String, logger: Logger) throws -> Int32 {
        let parent = PathText.directory(of: path)
        if FileKind.of(parent) == .missing { try Directories.make(parent, mode: 0o755) }
        var st = stat()
        if lstat(path, &st) == 0 {
            guard (st.st_mode & S_IFMT) == S_IFSOCK else {
                throw SyscallError(call: "bind(\(path)): exists and is not a socket", errno: .fileExists)
            }
            let probe = kevd_unix_connect(path)
            if probe >= 0 {
                Glibc.close(probe)
                throw SyscallError(call: "bind(\(path)): another kevd is listening there", errno: .addressInUse)
            }
            unlink(path)
        }
        return try syscall("listen(\(path))") { kevd_unix_listen(path, 128) }
    }

    func acceptAll() {
        for _ in 0..<64 {
            let fd = kevd_accept(listener.rawValue)
            guard fd >= 0 else {
                if errno == EMFILE || errno == ENFILE { acceptWithoutFDs() }
                return  // EAGAIN, or a client that left before we got to it.
            }
            fdExhaustionReported = false
            let id = nextConnectionID
            nextConnectionID += 1
            let connection = Connection(id: id, fd: fd, credentials: Connection.credentials(of: fd))
            if let refusal = admissionRefusal(connection) {
                refuse(connection, refusal.limit, configured: refusal.configured, value: refusal.value, refusal.message)
                _ = kevd_write_some(fd, connection.output.bytes.baseAddress, connection.output.count)
                continue  // `connection` goes out of scope: its fd is closed.
            }
            do {
                try context.loop.register(fd: fd, events: [.readable, .readHangup], priority: .clients) {
                    [unowned self] events in self.handle(id, events)
                }
            } catch {
                continue
            }
            connections[id] = connection
            byFD[fd] = id
            admitted(connection)
        }
    }

    /// Out of fds (EMFILE/ENFILE) with clients waiting: the listening socket stays readable, and epoll being
    /// level-triggered, the loop would spin on it at full CPU (the classic accept bug). The reserve fd is given
    /// up for a moment to accept the waiting clients one by one, tell each why, and close them; if even that
    /// fails, accepting pauses until a connection closes.
    func acceptWithoutFDs() {
        if !fdExhaustionReported {
            fdExhaustionReported = true
            context.logger.error(
                "out of file descriptors: refusing clients until some close (raise LimitNOFILE or lower [server] max_clients)",
                metadata: ["clients": "\(connections.count)"])
        }
        let message = Array(#"{"ok":false,"error":"kevd is out of file descriptors; try again later"}"#.utf8) + [0x0A]
        var stuck = false
        for _ in 0..<64 {
            if reserveFD >= 0 {
                Glibc.close(reserveFD)
                reserveFD = -1
            }
            let fd = kevd_accept(listener.rawValue)
            let code = errno
            if fd >= 0 {
                _ = message.withUnsafeBytes { kevd_write_some(fd, $0.baseAddress, $0.count) }
                Glibc.close(fd)
            }
            reserveFD = open("/dev/null", O_RDONLY | O_CLOEXEC)
            if fd < 0 && code != EMFILE && code != ENFILE { return }  // EAGAIN: nobody else is waiting.
            if fd < 0 || reserveFD < 0 {
                stuck = true
                break
            }
        }
        guard stuck else { return }
        acceptPaused = true
        acceptPausedAt = Clock.monotonicNanoseconds()
        try? context.loop.modify(fd: listener.rawValue, events: [])
    }

    /// An fd may be free again (a client left, or a second passed and something else closed one): waiting
    /// clients can at least be told. If not, `acceptWithoutFDs` pauses again after one try: no spin.
    func resumeAccepting() {
        acceptPaused = false
        try? context.loop.modify(fd: listener.rawValue, events: .readable)
    }
}
