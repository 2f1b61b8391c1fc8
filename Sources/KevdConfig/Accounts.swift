import Glibc

/// User and group names to ids (NSS: getpwnam_r/getgrnam_r), read at configuration time only. A number is
/// taken as an id as it is.
enum Accounts {
    /// A passwd entry: what dropping privileges to a user needs besides its uid.
    struct User {
        let name: String
        let uid: UInt32
        /// The primary group.
        let gid: UInt32
    }

    static func uid(_ name: String) -> UInt32? {
        if let id = UInt32(name) { return id }
        return user(name)?.uid
    }

    static func gid(_ name: String) -> UInt32? {
        if let id = UInt32(name) { return id }
        var entry = group()
        var result: UnsafeMutablePointer<group>? = nil
        var buffer = [CChar](repeating: 0, count: 16384)
        guard getgrnam_r(name, &entry, &buffer, buffer.count, &result) == 0, result != nil else { return nil }
        return entry.gr_gid
    }

    /// The passwd entry of a user name, or of a uid given as a number; nil when there is none.
    static func user(_ nameOrId: String) -> User? {
        var entry = passwd()
        var result: UnsafeMutablePointer<passwd>? = nil
        var buffer = [CChar](repeating: 0, count: 16384)
        let status = if let id = UInt32(nameOrId) {
            getpwuid_r(id, &entry, &buffer, buffer.count, &result)
        } else {
            getpwnam_r(nameOrId, &entry, &buffer, buffer.count, &result)
        }
        guard status == 0, result != nil else { return nil }
        return User(name: String(cString: entry.pw_name), uid: entry.pw_uid, gid: entry.pw_gid)
    }

    /// The groups `user` belongs to by /etc/group (and NSS), plus `gid`: what `initgroups(user, gid)` would set.
    static func groupList(user: String, gid: UInt32) -> [UInt32] {
        var count: Int32 = 32
        while true {
            var groups = [gid_t](repeating: 0, count: Int(count))
            let wanted = count
            if getgrouplist(user, gid, &groups, &count) >= 0 { return Array(groups.prefix(Int(count))) }
            // Too small: `count` now holds the number needed (glibc); grow at least twice in case it did not.
            count = max(count, wanted * 2)
        }
    }
}
