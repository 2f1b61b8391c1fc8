"""Helpers the scenarios share: a booted VM with the package installed, and kevctl calls in the guest."""
import json
import os
import shutil
import time

from vmtest import VM, ScenarioFailed, check


def installed_vm(context, name, extra_args=()):
    """The VM called name, booted once and with the kevd package installed the way a user installs it
    (`apt install ./kevd_….deb`); later scenarios reuse it as it is. Returns (vm, figures of this call)."""
    figures = {}
    vm = context["vms"].get(name)
    if vm is not None and vm.alive():
        context["current_vm"] = vm
        return vm, figures
    vm = VM(context["image"], context["work"], name)
    vm.extra_args = list(extra_args)
    context["vms"][name] = vm
    context["current_vm"] = vm
    deb = context["deb"]
    shutil.copy(deb, os.path.join(vm.share, "data", os.path.basename(deb)))
    figures["boot"] = f"{vm.start():.1f} s"
    started = time.monotonic()
    vm.run(f"""cp /mnt/vmtest/data/{os.path.basename(deb)} /root/
cd /root && DEBIAN_FRONTEND=noninteractive apt-get install -y ./{os.path.basename(deb)}
""", timeout=1200)
    figures["apt install"] = f"{time.monotonic() - started:.1f} s"
    return vm, figures


def kevctl_json(vm, arguments, timeout=60):
    """Runs `kevctl ARGUMENTS` in the guest and parses its one JSON output."""
    result = vm.run(f"kevctl {arguments}\n", timeout=timeout)
    try:
        return json.loads(result.out)
    except ValueError:
        raise ScenarioFailed(f"kevctl {arguments} printed no JSON: {result.out!r}")


def head(vm):
    """The seq of the newest event (kevctl status --json's head)."""
    return int(kevctl_json(vm, "status --json")["head"])


def journal(vm, filters="", timeout=120):
    """The guest's journal (kevctl journal, read from the files), as a list of events."""
    result = vm.run(f"kevctl journal --state-dir /var/lib/kevd {filters}\n", timeout=timeout)
    events = []
    for line in result.out.splitlines():
        line = line.strip()
        if line.startswith("{"):
            events.append(json.loads(line))
    return events


def verify_journal(vm):
    result = vm.run("kevctl journal --state-dir /var/lib/kevd --verify\n", timeout=180, ok=False)
    check(result.rc == 0, f"kevctl journal --verify failed (exit {result.rc}):\n{result.out}")
    return result.out


def first_event(output):
    for line in output.splitlines():
        if line.startswith("{"):
            return json.loads(line)
    raise ScenarioFailed(f"no event in kevctl's output: {output!r}")


def show(vm, unit, *properties):
    """systemctl show UNIT -p … as a dict."""
    result = vm.run(f"systemctl show {unit} " + " ".join(f"-p {p}" for p in properties) + "\n")
    values = {}
    for line in result.out.splitlines():
        key, _, value = line.partition("=")
        values[key] = value
    return values
