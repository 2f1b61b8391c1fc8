"""Scenario 2, udevd: devices that come and go on a booted machine, seen through kevd's udev source
([udev] source = "auto" in the packaged kevd.toml picks udevd where it runs).

- the example rule Rules/10-usb-storage.toml, enabled the way its README says (copied into /etc/kevd/rules.d);
- a USB disk with an ext4 file system labelled BACKUP, plugged in over QMP (usb-storage on the xhci bus), makes
  `kevctl wait type=add data.ID_FS_LABEL=BACKUP` succeed and runs the rule (rule.succeeded naming /dev/sd…);
- unplugging it gives `remove` for the same device;
- a virtio NIC hot-plugged and unplugged gives a net add and remove.
Two latencies: from QMP's device_add reply to `kevctl wait` in the guest returning the event, on the host's
clock (it includes the guest's USB enumeration, udevd's rules, and up to 0.1 s of the agent's polling of the
share), and, on the guest's monotonic clock, from udevd's USEC_INITIALIZED to kevd's event.
"""
import os
import subprocess
import time

from common import first_event, head, installed_vm
from vmtest import check, wait_until


def run(context):
    vm, figures = installed_vm(context, "main")

    # Enable the example rule as its README says, and wait until kevd has loaded it (the first kevctl call also
    # starts kevd through its socket if the previous scenario stopped it).
    vm.run("cp /usr/share/kevd/examples/rules/10-usb-storage.toml /etc/kevd/rules.d/\n")
    wait_until(lambda: "usb-storage-log" in vm.run("kevctl rules list\n", ok=False).out, 60,
               "kevd to load 10-usb-storage.toml from /etc/kevd/rules.d")
    vm.run("udevadm settle --timeout=60\n")

    # A USB disk labelled BACKUP.
    disk = os.path.join(vm.work, "backup.raw")
    if os.path.exists(disk):
        os.unlink(disk)
    subprocess.run(["mkfs.ext4", "-q", "-L", "BACKUP", disk, "16M"], check=True, stdout=subprocess.DEVNULL)
    before = head(vm)
    waiter = vm.spawn(f"kevctl wait --from {before + 1} --timeout 120 source=udev type=add "
                      "data.ID_FS_LABEL=BACKUP data.DEVTYPE=disk\n")
    vm.qmp.command("blockdev-add", **{"node-name": "backup", "driver": "raw",
                                      "file": {"driver": "file", "filename": disk}})
    vm.qmp.command("device_add", driver="usb-storage", drive="backup", bus="xhci.0", id="backupdisk",
                   removable=True)
    plugged = time.monotonic()
    result = waiter.wait(150)
    latency = time.monotonic() - plugged
    check(result.rc == 0, f"kevctl wait saw no add of the BACKUP disk (exit {result.rc}): {result.out}")
    added = first_event(result.out)
    data = added.get("data", {})
    check(data.get("ID_BUS") == "usb", f"the add event's ID_BUS is {data.get('ID_BUS')!r}")
    check("/usb" in added.get("key", ""), f"the add event's key is not below a USB controller: {added.get('key')}")
    figures["hot-plug to kevctl wait (host clock)"] = f"{latency:.2f} s"
    # Inside the guest, on one clock: udevd's USEC_INITIALIZED (CLOCK_MONOTONIC, when udevd first handled the
    # device) to kevd's event (its mono, CLOCK_MONOTONIC in ns).
    if "USEC_INITIALIZED" in data and "mono" in added:
        figures["udevd to kevd event"] = f"{(added['mono'] / 1000 - int(data['USEC_INITIALIZED'])) / 1e6:.3f} s"

    ran = vm.run(f"kevctl wait --from {before + 1} --timeout 120 type=rule.succeeded key=usb-storage-log\n",
                 timeout=150, ok=False)
    check(ran.rc == 0, f"the example rule 10-usb-storage did not succeed (exit {ran.rc}): {ran.out}")
    check("new USB disk /dev/sd" in ran.out, f"the rule's output does not name the disk: {ran.out}")

    # Unplug: remove for the same device.
    before = head(vm)
    waiter = vm.spawn(f"kevctl wait --from {before + 1} --timeout 120 source=udev type=remove "
                      f"'key={added['key']}'\n")
    vm.qmp.command("device_del", id="backupdisk")
    unplugged = time.monotonic()
    result = waiter.wait(150)
    check(result.rc == 0, f"kevctl wait saw no remove of the BACKUP disk (exit {result.rc}): {result.out}")
    figures["unplug to event"] = f"{time.monotonic() - unplugged:.2f} s"
    wait_until(lambda: _gone(vm, "backupdisk"), 60, "qemu to release the USB disk")
    vm.qmp.command("blockdev-del", **{"node-name": "backup"})

    # A NIC: add and remove.
    before = head(vm)
    waiter = vm.spawn(f"kevctl wait --from {before + 1} --timeout 120 source=udev type=add data.SUBSYSTEM=net\n")
    vm.qmp.command("netdev_add", type="user", id="vmtestnet")
    vm.qmp.command("device_add", driver="virtio-net-pci", netdev="vmtestnet", id="vmtestnic")
    plugged = time.monotonic()
    result = waiter.wait(150)
    check(result.rc == 0, f"kevctl wait saw no net add (exit {result.rc}): {result.out}")
    figures["NIC add"] = f"{time.monotonic() - plugged:.2f} s"
    nic = first_event(result.out)
    before = head(vm)
    waiter = vm.spawn(f"kevctl wait --from {before + 1} --timeout 120 source=udev type=remove data.SUBSYSTEM=net\n")
    vm.qmp.command("device_del", id="vmtestnic")
    unplugged = time.monotonic()
    result = waiter.wait(150)
    check(result.rc == 0, f"kevctl wait saw no net remove (exit {result.rc}): {result.out}")
    check(first_event(result.out).get("data", {}).get("IFINDEX") == nic.get("data", {}).get("IFINDEX"),
          f"the net remove is for another interface: {result.out}")
    figures["NIC remove"] = f"{time.monotonic() - unplugged:.2f} s"
    vm.run("rm -f /etc/kevd/rules.d/10-usb-storage.toml\n")
    return vm, figures


def _gone(vm, device_id):
    """Whether qemu no longer lists the device (DEVICE_DELETED may have come with an earlier reply)."""
    devices = vm.qmp.command("qom-list", path="/machine/peripheral")
    return all(d.get("name") != device_id for d in devices)
