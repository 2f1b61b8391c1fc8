"""Scenario 2, udevd: devices that come and go on a booted machine, seen through kevd's udev source
([udev] source = "auto" in the packaged kevd.toml picks udevd where it runs).

- the example rule Rules/10-usb-storage.toml, enabled the way its README says (copied into /etc/kevd/rules.d);
- a USB disk with an ext4 file system labelled BACKUP, plugged in over QMP (usb-storage on the xhci bus), makes
  `kevctl wait type=add data.ID_FS_LABEL=BACKUP` succeed and runs the rule (rule.succeeded naming /dev/sd…);
- unplugging it gives `remove` for the same device;
- a virtio NIC hot-plugged and unplugged gives a net add and remove;
- catch-up (`[udev] catchup`, on by default): the first start reported every device udevd knew once, as a
  catch-up add; the BACKUP disk plugged in while kevd is stopped gives, when kevd starts, one `add` with
  data.catchup = true and udevd's properties (ID_FS_LABEL, ID_BUS), and the rule runs once for it; unplugged
  while kevd is stopped, a catch-up `remove` for the same device.
Two latencies: from QMP's device_add reply to `kevctl wait` in the guest returning the event, on the host's
clock (it includes the guest's USB enumeration, udevd's rules, and up to 0.1 s of the agent's polling of the
share), and, on the guest's monotonic clock, from udevd's USEC_INITIALIZED to kevd's event.
"""
import os
import subprocess
import time

from common import first_event, head, installed_vm, journal, kevctl_json
from vmtest import check, wait_until


def run(context):
    vm, figures = installed_vm(context, "main")

    # Enable the example rule as its README says, and wait until kevd has loaded it (the first kevctl call also
    # starts kevd through its socket if the previous scenario stopped it).
    vm.run("cp /usr/share/kevd/examples/rules/10-usb-storage.toml /etc/kevd/rules.d/\n")
    wait_until(lambda: "usb-storage-log" in vm.run("kevctl rules list\n", ok=False).out, 60,
               "kevd to load 10-usb-storage.toml from /etc/kevd/rules.d")
    vm.run("udevadm settle --timeout=60\n")
    # The first start's catch-up (no history: every device once, as coldplug) is done before anything is plugged,
    # so that the waits below cannot take one of its adds for a live one.
    wait_until(lambda: _catch_up_done(vm), 120, "kevd's device catch-up at its first start to be done")
    coldplug = journal(vm, "source=udev type=add data.catchup=true")
    check(len(coldplug) > 0, "kevd's first start reported no device as a catch-up add")
    figures["first start: devices caught up"] = str(len(coldplug))

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

    _plugged_while_stopped(vm, disk, figures)
    vm.run("rm -f /etc/kevd/rules.d/10-usb-storage.toml\n")
    return vm, figures


def _plugged_while_stopped(vm, disk, figures):
    """Catch-up: the BACKUP disk plugged in while kevd is stopped (socket too, so that nothing starts it), then
    kevd started: one catch-up add with udevd's properties, and the rule runs once for it; unplugged while kevd
    is stopped: a catch-up remove for the same device."""
    since = head(vm) + 1
    vm.run("systemctl stop kevd.socket kevd.service\n", timeout=120)
    vm.qmp.command("blockdev-add", **{"node-name": "backup", "driver": "raw",
                                      "file": {"driver": "file", "filename": disk}})
    vm.qmp.command("device_add", driver="usb-storage", drive="backup", bus="xhci.0", id="backupdisk",
                   removable=True)
    wait_until(lambda: vm.run("udevadm settle --timeout=60 && test -e /dev/disk/by-label/BACKUP\n", ok=False).rc == 0,
               120, "udevd to name the BACKUP disk plugged in while kevd is stopped")
    check(vm.run("systemctl is-active kevd.service\n", ok=False).out.strip() != "active",
          "kevd started while the disk was plugged in")
    started = time.monotonic()
    vm.run("systemctl start kevd.socket kevd.service\n", timeout=180)
    result = vm.run(f"kevctl wait --from {since} --timeout 120 source=udev type=add data.ID_FS_LABEL=BACKUP "
                    "data.DEVTYPE=disk data.catchup=true\n", timeout=150, ok=False)
    check(result.rc == 0, f"no catch-up add for the disk plugged in while kevd was stopped (exit {result.rc}): {result.out}")
    figures["start to catch-up add"] = f"{time.monotonic() - started:.2f} s"
    added = first_event(result.out)
    data = added.get("data", {})
    check(data.get("ID_BUS") == "usb" and data.get("DEVNAME", "").startswith("/dev/sd") and data.get("seqnum") == 0,
          f"the catch-up add lacks udevd's properties (ID_BUS, DEVNAME) or has a seqnum: {added}")
    check(data.get("ACTION") == "add" and "SEQNUM" not in data, f"the catch-up add's ACTION/SEQNUM: {added}")
    ran = vm.run(f"kevctl wait --from {added['seq']} --timeout 120 type=rule.succeeded key=usb-storage-log\n",
                 timeout=150, ok=False)
    check(ran.rc == 0 and "new USB disk /dev/sd" in ran.out,
          f"the example rule did not run for the caught-up disk (exit {ran.rc}): {ran.out}")
    wait_until(lambda: _catch_up_done(vm), 120, "kevd's device catch-up to be done")
    adds = [e for e in journal(vm, "source=udev type=add data.catchup=true") if e["seq"] >= since
            and e.get("key") == added["key"]]
    runs = [e for e in journal(vm, "type=rule.succeeded key=usb-storage-log") if e["seq"] >= since]
    check(len(adds) == 1 and len(runs) == 1,
          f"the disk plugged in while kevd was stopped: {len(adds)} catch-up adds, {len(runs)} rule runs (want 1 and 1)")

    # Unplugged while kevd is stopped: a catch-up remove for the same device, with the properties it was known by.
    since = head(vm) + 1
    vm.run("systemctl stop kevd.socket kevd.service\n", timeout=120)
    vm.qmp.command("device_del", id="backupdisk")
    wait_until(lambda: _gone(vm, "backupdisk"), 60, "qemu to release the USB disk")
    wait_until(lambda: vm.run(f"udevadm settle --timeout=60 && ! test -e '/sys{added['key']}'\n", ok=False).rc == 0,
               120, "the unplugged disk to leave /sys while kevd is stopped")
    vm.qmp.command("blockdev-del", **{"node-name": "backup"})
    vm.run("systemctl start kevd.socket kevd.service\n", timeout=180)
    result = vm.run(f"kevctl wait --from {since} --timeout 120 source=udev type=remove 'key={added['key']}' "
                    "data.catchup=true\n", timeout=150, ok=False)
    check(result.rc == 0, f"no catch-up remove for the disk unplugged while kevd was stopped (exit {result.rc}): {result.out}")
    removed = first_event(result.out)
    check(removed.get("data", {}).get("ID_FS_LABEL") == "BACKUP",
          f"the catch-up remove lacks the properties the disk was known by: {removed}")


def _catch_up_done(vm):
    """Whether `kevctl status` says the start-up device catch-up was published."""
    udev_catchup = kevctl_json(vm, "status --json").get("sources", {}).get("udev_catchup") or {}
    return udev_catchup.get("done") is True


def _gone(vm, device_id):
    """Whether qemu no longer lists the device (DEVICE_DELETED may have come with an earlier reply)."""
    devices = vm.qmp.command("qom-list", path="/machine/peripheral")
    return all(d.get("name") != device_id for d in devices)
