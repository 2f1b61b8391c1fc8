import Glibc
import KevdKernel
import KevdTestSupport
import Testing

/// The /sys enumeration on a tree laid out as sysfs lays it out (real directories, files and symlinks):
/// devices under devices/, found through class/* and bus/*/devices, each with its `subsystem` link and `uevent`.
@Suite("/sys enumeration")
struct SysfsDevicesTests {
    /// Makes `devices/<devpath>` with a uevent file and a subsystem link to `<kind>/<subsystem>`, and the
    /// `<kind>/<subsystem>[/devices]/<name>` link to it.
    func device(_ root: String, _ devpath: String, kind: String, subsystem: String, uevent: String) throws {
        let dir = root + "/devices" + devpath
        try Directories.make(dir, mode: 0o755)
        try Directories.make(root + "/" + kind + "/" + subsystem + (kind == "bus" ? "/devices" : ""), mode: 0o755)
        #expect(FileContents.replace(dir + "/uevent", with: Array(uevent.utf8)))
        #expect(symlink(root + "/" + kind + "/" + subsystem, dir + "/subsystem") == 0)
        let name = String(devpath.split(separator: "/").last!)
        #expect(symlink(dir, root + "/" + kind + "/" + subsystem + (kind == "bus" ? "/devices/" : "/") + name) == 0)
    }

    @Test("every device once, as an add with the uevent file's variables; subsystems select the folders")
    func enumerate() throws {
        let tmp = try TemporaryDirectory()
        let root = tmp.file("sys")
        try device(root, "/virtual/net/veth0", kind: "class", subsystem: "net", uevent: "INTERFACE=veth0\nIFINDEX=4\n")
        try device(
            root, "/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sda", kind: "class", subsystem: "block",
            uevent: "MAJOR=8\nMINOR=0\nDEVNAME=sda\nDEVTYPE=disk\n")
        try device(root, "/pci0000:00/0000:00:14.0/usb1", kind: "bus", subsystem: "usb", uevent: "DEVTYPE=usb_device\nDRIVER=usb\n")
        // A class entry that is not a device (no uevent) is skipped.
        try Directories.make(root + "/devices/virtual/net/broken", mode: 0o755)
        #expect(symlink(root + "/devices/virtual/net/broken", root + "/class/net/broken") == 0)

        let all = SysfsDevices.enumerate(filters: [], sysRoot: root)
        #expect(all.map(\.devpath) == [
            "/pci0000:00/0000:00:14.0/usb1", "/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sda",
            "/virtual/net/veth0",
        ].map { "/devices" + $0 })
        let disk = try #require(all.first { $0.subsystem == "block" })
        #expect(disk.action == "add" && disk.devtype == "disk" && disk.devnode == "/dev/sda" && disk.sysname == "sda" && disk.seqnum == 0)
        #expect(disk.properties.map(\.name) == ["ACTION", "DEVPATH", "SUBSYSTEM", "MAJOR", "MINOR", "DEVNAME", "DEVTYPE"])
        #expect(all.first { $0.subsystem == "usb" }?.driver == "usb")

        #expect(SysfsDevices.enumerate(filters: [.init(subsystem: "net", devtype: nil)], sysRoot: root).map(\.sysname) == ["veth0"])
        #expect(SysfsDevices.enumerate(filters: [.init(subsystem: "block", devtype: "partition")], sysRoot: root).isEmpty)
        #expect(SysfsDevices.enumerate(filters: [.init(subsystem: "block", devtype: "disk")], sysRoot: root).count == 1)
    }
}
