"""Scenario: the input and ACPI sources on a booted machine ([input] and [acpi] in kevd.toml, the example
rules Rules/40-power-button.toml and Rules/41-lid.toml enabled the way their README says).

- initial state: a uinput device whose lid is closed before kevd starts gives a `switch` of `lid` with
  data.state=true and data.catchup=true when kevd starts, and the lid rule runs for it;
- hotplug: a device created after kevd started is opened (`input`/`opened`), its lid toggled closed and open
  gives two `switch` events (state true, then false), the lid rule runs for each;
- an ordinary key (KEY_A) typed on it is not journaled: only the configured keys become events;
- removal while a key is held: the power key pressed and the device destroyed gives the `press`, a `release`
  (the kernel's, or kevd's own with data.synthetic when it read too late for the kernel's) and then
  `input`/`closed` (reason unplugged or removed), and kevd does not spin afterwards;
- QMP system_powerdown (the ACPI power button): `press` and `release` of `power` from the "Power Button"
  device and an `acpi` event of class button/power, both example rules run, and with
  `inhibit = ["power-key", …]` logind sees the key ("Power key pressed" in its log) but does not power off;
- without the inhibitor (a reload drops it), system_powerdown powers the machine off: logind's configured
  action (HandlePowerKey=poweroff, Debian's default, set again by the scenario's drop-in) is seen. This is the scenario's last step: the VM is gone
  after it.

A drop-in sets logind's HandlePowerKey back to poweroff (the image ignores it) and its lid handling to ignore,
so the test devices' lid cannot suspend the guest.
The uinput devices come from Tests/VM/guest/uinput-emit.c, built statically here (the guest has no compiler).
"""
import os
import subprocess
import time

from common import first_event, head, installed_vm, journal, kevctl_json
from vmtest import HERE, ScenarioFailed, check, wait_until


def wait_event(vm, since, terms, timeout=120):
    """The first event from seq `since` on matching the kevctl filter `terms` (shell words)."""
    result = vm.run(f"kevctl wait --from {since} --timeout {timeout} {terms}\n", timeout=timeout + 30, ok=False)
    check(result.rc == 0, f"kevctl wait saw no event {terms} from seq {since} (exit {result.rc}): {result.out}")
    return first_event(result.out)


def wait_file(vm, path, timeout=120):
    vm.run(f"for i in $(seq {timeout * 10}); do [ -e {path} ] && exit 0; sleep 0.1; done; "
           f"echo 'no {path}'; exit 1\n", timeout=timeout + 30)


def kevd_cpu_ticks(vm):
    out = vm.run("pid=$(systemctl show -p MainPID --value kevd.service); "
                 "awk '{print $14 + $15}' /proc/$pid/stat\n").out.strip()
    return int(out.splitlines()[-1])


def run(context):
    vm, figures = installed_vm(context, "input")
    emitter = os.path.join(vm.share, "data", "uinput-emit")
    subprocess.run(["gcc", "-static", "-O2", "-o", emitter, os.path.join(HERE, "guest", "uinput-emit.c")], check=True)

    # The image sets HandlePowerKey=ignore (other scenarios' system_powerdown is only an input event); here logind
    # gets Debian's default action back, poweroff, so that its lock and its action can be seen. zz- sorts the
    # drop-in after the image's vmtest.conf.
    vm.run("""set -e
modprobe uinput
install -m 0755 /mnt/vmtest/data/uinput-emit /usr/local/bin/uinput-emit
mkdir -p /etc/systemd/logind.conf.d
printf '[Login]\\nHandlePowerKey=poweroff\\nHandleLidSwitch=ignore\\nHandleLidSwitchExternalPower=ignore\\nHandleLidSwitchDocked=ignore\\n' \\
    >/etc/systemd/logind.conf.d/zz-vmtest-input.conf
systemctl restart systemd-logind
systemctl is-active systemd-logind
cp /usr/share/kevd/examples/rules/40-power-button.toml /usr/share/kevd/examples/rules/41-lid.toml /etc/kevd/rules.d/
systemctl stop kevd.service
rm -f /run/vmtest-*
cp /etc/kevd/kevd.toml /root/kevd.toml.orig
printf '\\n[input]\\ninhibit = ["power-key", "lid-switch"]\\n\\n[acpi]\\n' >>/etc/kevd/kevd.toml
""")

    # Initial state: lid A closed before kevd starts.
    device_a = vm.spawn("uinput-emit 'vmtest lid A' lid=1 ready=/run/vmtest-A-ready wait=/run/vmtest-A-done\n")
    wait_file(vm, "/run/vmtest-A-ready")
    vm.run("udevadm settle --timeout=60\nsystemctl start kevd.service\n", timeout=180)
    initial = wait_event(vm, 1, "source=input type=switch key=lid 'data.device=vmtest lid A' data.catchup=true")
    check(initial["data"].get("state") is True, f"lid A was closed before kevd started, but: {initial}")
    check(initial["data"].get("name") == "SW_LID" and initial["data"].get("devnode", "").startswith("/dev/input/event"),
          f"the initial lid event lacks its name or device node: {initial}")
    ran = wait_event(vm, initial["seq"], "type=rule.succeeded key=lid-switch")
    check("lid closed on vmtest lid A (its position at start)" in str(ran), f"the lid rule's output: {ran}")
    for lock in ("handle-power-key", "handle-lid-switch"):
        wait_event(vm, 1, f"source=kevd type=inhibited data.lock={lock}")
    locks = vm.run("systemd-inhibit --list --no-pager\n").out
    check("kevd" in locks and "handle-power-key" in locks, f"logind does not list kevd's inhibitor lock:\n{locks}")
    vm.run("touch /run/vmtest-A-done\n")
    device_a.wait(60)

    # Hotplug: lid B appears after kevd started; closed, opened, then removed while the power key is held.
    since = head(vm) + 1
    device_b = vm.spawn("uinput-emit 'vmtest lid B' wait=/run/vmtest-B-1 lid=1 wait=/run/vmtest-B-2 lid=0 "
                        "wait=/run/vmtest-B-3 key=30:1 key=30:0 key=116:1 wait=/run/vmtest-B-4\n")
    opened = wait_event(vm, since, "source=input type=opened 'data.device=vmtest lid B'")
    check(opened["data"].get("reason") == "added", f"lid B was opened, but not as a new device: {opened}")
    sources = kevctl_json(vm, "status --json")["sources"]
    check(opened["data"].get("devnode") in (sources.get("input") or {}).get("devices", []),
          f"status does not list lid B's {opened['data'].get('devnode')} among the devices read: {sources.get('input')}")
    check((sources.get("acpi") or {}).get("overflows") == 0, f"status's acpi: {sources.get('acpi')}")
    vm.run("touch /run/vmtest-B-1\n")
    closed = wait_event(vm, opened["seq"], "source=input type=switch key=lid 'data.device=vmtest lid B' data.state=true")
    check("catchup" not in closed["data"], f"a lid change is marked catchup: {closed}")
    ran = wait_event(vm, closed["seq"], "type=rule.succeeded key=lid-switch")
    check("lid closed on vmtest lid B" in str(ran) and "position at start" not in str(ran), f"the lid rule's output: {ran}")
    vm.run("touch /run/vmtest-B-2\n")
    reopened = wait_event(vm, closed["seq"] + 1,
                          "source=input type=switch key=lid 'data.device=vmtest lid B' data.state=false")
    check("catchup" not in reopened["data"], f"a lid change is marked catchup: {reopened}")
    vm.run("touch /run/vmtest-B-3\n")
    press = wait_event(vm, reopened["seq"], "source=input type=press key=power 'data.device=vmtest lid B'")
    # KEY_A was typed just before: not a configured key, so nothing of it is journaled (no keylogger).
    typed = journal(vm, "source=input data.code=30")
    check(typed == [], f"an unconfigured key (KEY_A) reached the journal: {typed}")
    vm.run("touch /run/vmtest-B-4\n")
    device_b.wait(60)
    release = wait_event(vm, press["seq"], "source=input type=release key=power 'data.device=vmtest lid B'")
    gone = wait_event(vm, press["seq"], "source=input type=closed 'data.device=vmtest lid B'")
    check(gone["data"].get("reason") in ("unplugged", "removed"), f"lid B closed for another reason: {gone}")
    check(release["seq"] < gone["seq"], "the held key's release came after the device was closed")
    # The kernel releases held keys as the device goes; a reader too late for that gets ENODEV, and kevd
    # releases the key itself (data.synthetic). Either way the press is followed by a release.
    figures["held key released by"] = "kevd (synthetic)" if release["data"].get("synthetic") else "the kernel"
    # An unplugged device must not leave the loop spinning on a dead fd: kevd's CPU time over 2 s stays small.
    before = kevd_cpu_ticks(vm)
    vm.run("sleep 2\n")
    spent = kevd_cpu_ticks(vm) - before
    check(spent < 50, f"kevd used {spent} ticks of CPU in the 2 s after a device was removed (spinning?)")
    figures["kevd CPU in 2 s after the unplug"] = f"{spent * 10} ms"

    # The ACPI power button, with logind's power-key lock held by kevd.
    logind_presses = lambda: int(vm.run("journalctl -b -u systemd-logind --no-pager | grep -c 'Power key pressed'\n",
                                        ok=False).out.strip().splitlines()[-1])
    pressed_before = logind_presses()
    since = head(vm) + 1
    waiter = vm.spawn(f"kevctl wait --from {since} --timeout 120 source=input type=press key=power "
                      "'data.device=Power Button'\n")
    vm.qmp.command("system_powerdown")
    pushed = time.monotonic()
    result = waiter.wait(150)
    check(result.rc == 0, f"system_powerdown gave no press of power from the Power Button (exit {result.rc}): {result.out}")
    figures["system_powerdown to kevctl wait (host clock)"] = f"{time.monotonic() - pushed:.2f} s"
    press = first_event(result.out)
    check(press["data"].get("name") == "KEY_POWER" and press["data"].get("code") == 116, f"the press: {press}")
    wait_event(vm, since, "source=input type=release key=power 'data.device=Power Button'")
    acpi = wait_event(vm, since, "source=acpi type=button/power")
    check(acpi["data"].get("device_class") == "button/power" and acpi["data"].get("type") == "00000080",
          f"the acpi event's fields are not acpid's: {acpi}")
    wait_event(vm, since, "type=rule.succeeded key=power-button")
    wait_event(vm, since, "type=rule.succeeded key=acpi-power-button")
    wait_until(lambda: logind_presses() > pressed_before, 60, "logind to log the power key")
    jobs = vm.run("systemctl list-jobs --no-legend --no-pager; systemctl is-system-running || true\n").out
    check("poweroff" not in jobs and "stopping" not in jobs, f"logind acted on the power key despite kevd's lock:\n{jobs}")
    check(vm.alive(), "the VM powered off despite kevd's power-key lock")

    # Without the lock, logind's configured action (poweroff) happens.
    vm.run("cp /root/kevd.toml.orig /etc/kevd/kevd.toml\n"
           "printf '\\n[input]\\n\\n[acpi]\\n' >>/etc/kevd/kevd.toml\nsystemctl reload kevd.service\n")
    wait_until(lambda: "kevd" not in vm.run("systemd-inhibit --list --no-pager\n").out, 60,
               "kevd to release its inhibitor locks after the reload")
    vm.qmp.command("system_powerdown")
    pushed = time.monotonic()
    try:
        vm.process.wait(300)
    except subprocess.TimeoutExpired:
        raise ScenarioFailed("without kevd's lock, system_powerdown did not power the VM off within 300 s")
    figures["poweroff by logind (no lock)"] = f"{time.monotonic() - pushed:.1f} s"
    return vm, figures
