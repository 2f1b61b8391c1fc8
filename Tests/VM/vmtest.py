#!/usr/bin/env python3
"""The test bed's host side: boots the Debian 12 image with qemu, talks to the guest agent through the 9p share
and to qemu through QMP, and runs the scenarios of Tests/VM/scenarios/ (one line per scenario with its figures).

    Tests/VM/vmtest.py --image DIR --deb FILE --work DIR [--scenarios systemd,udev,powercut] [--power-cuts N]

scripts/vmtest builds the package and the image and calls this. Standard library only.
"""
import argparse
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ALL_SCENARIOS = ["systemd", "udev", "package", "powercut", "diskerrors", "input"]
DEFAULT_SCENARIOS = ["systemd", "udev", "package", "powercut", "input"]


class ScenarioFailed(Exception):
    """A scenario's assertion failed: what the user would have seen go wrong."""


def check(condition, message):
    if not condition:
        raise ScenarioFailed(message)


def wait_until(predicate, timeout, what, interval=0.05):
    """Polls predicate() until it returns a true value, or fails after timeout seconds naming what it awaited."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise ScenarioFailed(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def kvm_usable():
    """KVM only where the CPU shows vmx or svm and /dev/kvm exists; otherwise TCG (nested guests here have no
    vmx/svm, and -accel kvm aborts or hangs there)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return (" vmx" in flags or " svm" in flags) and os.path.exists("/dev/kvm")


class QMP:
    """A QMP connection: commands and their replies; asynchronous events are kept in self.events."""

    def __init__(self, path, timeout=30):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        wait_until(lambda: self._try_connect(path), timeout, "qemu's QMP socket")
        self.sock.settimeout(60)
        self.file = self.sock.makefile("rwb", buffering=0)
        self.events = []
        self._read()  # the greeting
        self.command("qmp_capabilities")

    def _try_connect(self, path):
        try:
            self.sock.connect(path)
            return True
        except OSError:
            return False

    def _read(self):
        line = self.file.readline()
        if not line:
            raise ScenarioFailed("QMP connection closed by qemu")
        return json.loads(line)

    def command(self, name, **arguments):
        message = {"execute": name}
        if arguments:
            message["arguments"] = arguments
        self.file.write(json.dumps(message).encode() + b"\n")
        while True:
            reply = self._read()
            if "event" in reply:
                self.events.append(reply)
                continue
            if "error" in reply:
                raise ScenarioFailed(f"QMP {name} failed: {reply['error']}")
            return reply.get("return")

    def hmp(self, command_line):
        return self.command("human-monitor-command", **{"command-line": command_line})

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class CommandResult:
    def __init__(self, rc, out):
        self.rc = rc
        self.out = out

    def __repr__(self):
        return f"rc={self.rc} out={self.out!r}"


class GuestCommand:
    """A command running in the guest (started by the agent); wait() returns its CommandResult."""

    def __init__(self, vm, n, script):
        self.vm = vm
        self.n = n
        self.script = script

    def done(self):
        return os.path.exists(self.vm.cmd_path(self.n, "rc"))

    def wait(self, timeout=120):
        rc_path = self.vm.cmd_path(self.n, "rc")
        wait_until(lambda: os.path.exists(rc_path), timeout, f"the guest command {self.script.strip()[:120]!r}")
        with open(rc_path) as f:
            rc = int(f.read().strip())
        with open(self.vm.cmd_path(self.n, "out"), errors="replace") as f:
            out = f.read()
        return CommandResult(rc, out)

    def output_so_far(self):
        try:
            with open(self.vm.cmd_path(self.n, "out"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""


class VM:
    """One qemu guest booted from the test bed's image; boots of the same VM object reuse its disk."""

    def __init__(self, image, work, name, memory=1024, cpus=2):
        self.image = image
        self.work = os.path.join(work, name)
        self.name = name
        self.memory = memory
        self.cpus = cpus
        self.disk = os.path.join(self.work, "disk.raw")
        self.share = os.path.join(self.work, "share")
        self.process = None
        self.qmp = None
        self.boots = 0
        self.command_counter = 0
        self.extra_args = []
        self.boot_seconds = []
        os.makedirs(self.work, exist_ok=True)
        for sub in ("cmd", "boot", "data"):
            os.makedirs(os.path.join(self.share, sub), exist_ok=True)
        # Commands of an earlier VM object on this directory (one that died and is booted again) would be taken
        # for this one's: their numbers start again at 001-00001.
        for name in os.listdir(os.path.join(self.share, "cmd")):
            os.unlink(os.path.join(self.share, "cmd", name))
        shutil.copy(os.path.join(HERE, "guest", "agent"), os.path.join(self.share, "agent"))
        if not os.path.exists(self.disk):
            # A sparse copy of the cached image: every VM starts from the same clean system.
            subprocess.run(["cp", "--sparse=always", os.path.join(image, "rootfs.raw"), self.disk], check=True)

    def cmd_path(self, n, suffix):
        return os.path.join(self.share, "cmd", f"{n}.{suffix}")

    def start(self, timeout=900):
        """Boots the guest and waits until the agent reports the system up (is-system-running, udev settled)."""
        self.boots += 1
        boot_dir = os.path.join(self.share, "boot")
        before = set(os.listdir(boot_dir))
        self.qmp_path = os.path.join(self.work, "qmp.sock")
        if os.path.exists(self.qmp_path):
            os.unlink(self.qmp_path)
        self.serial_log = os.path.join(self.work, f"serial-{self.boots}.log")
        accel = ["-accel", "kvm", "-cpu", "host"] if kvm_usable() else ["-accel", "tcg,thread=multi", "-cpu", "max"]
        args = ["nice", "-n", "10", "qemu-system-x86_64", *accel, "-m", str(self.memory), "-smp", str(self.cpus),
                "-display", "none", "-no-reboot", "-nic", "none", "-serial", f"file:{self.serial_log}",
                "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
                "-kernel", os.path.join(self.image, "vmlinuz"), "-initrd", os.path.join(self.image, "initrd.img"),
                # no_timer_check: on a loaded host, TCG may deliver the timer too late for the kernel's IO-APIC
                # timer check, which then panics ("IO-APIC + timer doesn't work"); virtual machines skip it.
                # modules-load=: 9p's transport loaded (and the share's virtio device bound) before the agent's
                # unit mounts the share; left to udev's coldplug it raced the mount once in a dozen boots
                # ("9pnet_virtio: no channels available for device vmtest") and that boot never got ready.
                "-append", "root=/dev/vda rw console=ttyS0 quiet panic=-1 no_timer_check systemd.show_status=0 "
                           "modules-load=9pnet_virtio,9p",
                "-drive", f"file={self.disk},if=virtio,format=raw,cache=none",
                "-virtfs", f"local,path={self.share},mount_tag=vmtest,security_model=none",
                "-device", "qemu-xhci,id=xhci", *self.extra_args]
        started = time.monotonic()
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=open(os.path.join(self.work, f"qemu-{self.boots}.err"), "w"))
        self.qmp = QMP(self.qmp_path)

        def ready():
            if self.process.poll() is not None:
                raise ScenarioFailed(f"qemu exited with status {self.process.returncode} while booting "
                                     f"(see {self.serial_log})")
            new = [f for f in os.listdir(boot_dir) if f.endswith(".ready") and f not in before]
            return new[0] if new else None

        try:
            wait_until(ready, timeout, "the guest to boot (agent ready)", interval=0.1)
        except ScenarioFailed as error:
            raise ScenarioFailed(f"the VM did not boot ({error}); serial console tail:\n" + self.serial_tail())
        seconds = time.monotonic() - started
        self.boot_seconds.append(seconds)
        return seconds

    def serial_tail(self, lines=40):
        try:
            with open(self.serial_log, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return "(no serial log)"

    def spawn(self, script):
        """Starts a bash script in the guest; returns a GuestCommand."""
        self.command_counter += 1
        n = f"{self.boots:03d}-{self.command_counter:05d}"
        path = self.cmd_path(n, "sh")
        with open(path + ".tmp", "w") as f:
            f.write("set -u\n" + script)
        os.rename(path + ".tmp", path)
        return GuestCommand(self, n, script)

    def run(self, script, timeout=120, ok=True):
        """Runs a bash script in the guest and waits for it; with ok=True a non-zero exit fails the scenario."""
        result = self.spawn(script).wait(timeout)
        if ok and result.rc != 0:
            raise ScenarioFailed(f"guest command failed (exit {result.rc}):\n{script.strip()}\n--- output:\n"
                                 + result.out)
        return result

    def alive(self):
        return self.process is not None and self.process.poll() is None

    def power_cut(self):
        """SIGKILL to qemu: with cache=none, what the guest synced is on the disk and nothing else."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        if self.qmp:
            self.qmp.close()
        self.qmp = None

    def shutdown(self, timeout=120):
        """A clean shutdown (poweroff in the guest); SIGKILL if it does not end in time."""
        if not self.alive():
            return
        try:
            self.spawn("systemctl poweroff\n")
            self.process.wait(timeout)
        except Exception:  # noqa: BLE001 (a timeout, or the share gone: qemu must not outlive the run)
            self.power_cut()
        if self.qmp:
            self.qmp.close()
            self.qmp = None

    def kevd_journal_tail(self):
        """The guest's `journalctl -u kevd` (this boot and earlier ones), for a failing scenario's report."""
        if not self.alive():
            return "(the VM is not running)"
        try:
            result = self.run("journalctl -u kevd -u kevd.socket --no-pager -o short-monotonic | tail -n 80\n",
                              timeout=60, ok=False)
            return result.out
        except ScenarioFailed as error:
            return f"(could not read the guest journal: {error})"


def load_scenario(name):
    # The scenarios import this module by name and their shared helpers from their own folder.
    sys.modules.setdefault("vmtest", sys.modules[__name__])
    if os.path.join(HERE, "scenarios") not in sys.path:
        sys.path.insert(0, os.path.join(HERE, "scenarios"))
    path = os.path.join(HERE, "scenarios", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"vmtest_scenario_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def format_figures(figures):
    return ", ".join(f"{key} {value}" for key, value in figures.items())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", required=True, help="directory with rootfs.raw, vmlinuz, initrd.img")
    parser.add_argument("--deb", required=True, help="the kevd package to install in the guest")
    parser.add_argument("--work", required=True, help="a scratch directory for disks, shares and logs")
    parser.add_argument("--scenarios", default=",".join(DEFAULT_SCENARIOS),
                        help=f"comma-separated, of {','.join(ALL_SCENARIOS)} (default {','.join(DEFAULT_SCENARIOS)})")
    parser.add_argument("--power-cuts", type=int, default=10, help="power cuts in the powercut scenario")
    options = parser.parse_args()

    scenarios = [s for s in options.scenarios.split(",") if s]
    for s in scenarios:
        if s not in ALL_SCENARIOS:
            parser.error(f"unknown scenario {s}")
    os.makedirs(options.work, exist_ok=True)
    context = {"deb": os.path.abspath(options.deb), "image": options.image, "work": options.work,
               "power_cuts": options.power_cuts, "vms": {}}
    failures = 0
    started_all = time.monotonic()
    try:
        for name in scenarios:
            module = load_scenario(name)
            started = time.monotonic()
            vm = None
            try:
                vm, figures = module.run(context)
                elapsed = time.monotonic() - started
                print(f"vmtest {name}: ok ({elapsed:.0f} s): {format_figures(figures)}", flush=True)
            except Exception as error:  # noqa: BLE001 (any failure is the scenario's, reported with the journal)
                failures += 1
                elapsed = time.monotonic() - started
                vm = vm or context.get("current_vm")
                print(f"vmtest {name}: FAILED ({elapsed:.0f} s): {error}", flush=True)
                if vm is not None:
                    print(f"--- guest journalctl -u kevd ({name}):", flush=True)
                    print(vm.kevd_journal_tail(), flush=True)
                    print(f"--- end of the guest journal ({name}); VM files in {vm.work}", flush=True)
    finally:
        for vm in context["vms"].values():
            if vm.alive():
                vm.shutdown()
    total = time.monotonic() - started_all
    print(f"vmtest: {len(scenarios) - failures} of {len(scenarios)} scenarios passed in {total:.0f} s", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
