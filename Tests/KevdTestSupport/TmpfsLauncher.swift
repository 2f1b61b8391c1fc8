/// A launcher (the argv put before kevd's) that runs kevd in a private mount namespace (`unshare`) with a tmpfs of
/// `bytes` (and at most `inodes` inodes, 0: the default) mounted on `directory`: a small disk a test can fill,
/// that nothing leaves mounted whatever happens to the test. The test reaches it through `/proc/<pid>/root`.
public func tmpfsLauncher(mountingOn directory: String, bytes: Int, inodes: Int = 0) -> [String] {
    [
        "/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
        #"mount -t tmpfs -o "$1",mode=0750 tmpfs "$0" && shift && exec "$@""#,
        directory, "size=\(bytes)" + (inodes > 0 ? ",nr_inodes=\(inodes)" : ""),
    ]
}
