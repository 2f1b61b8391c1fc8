"""Scenario 1, systemd: what an administrator checks after `apt install ./kevd_….deb` on a machine where systemd
is PID 1.

- kevd.socket is enabled and listening; kevd.service is enabled but not running yet;
- the first `kevctl status` starts kevd through socket activation, and gets its answer;
- READY=1 (the unit is active only after it, Type=notify) and STATUS= as README documents
  ("ready: N watches, N timers, N rules, N subscribers; seq N");
- `systemctl reload kevd` publishes kevd/reloaded;
- a wedged loop (SIGSTOP to the main pid) is killed by the watchdog and restarted, and seq continues gap-free;
- rule scripts, which run inside the unit's sandbox, can write to /var/lib/kevd and /run/kevd, and, with the
  drop-in the unit's header shows (ReadWritePaths=), elsewhere under /var/lib;
- a [[watch]] added by a reload is watched with fanotify under the unit's system-call filter, and a file made
  there is reported with the pid that made it;
- `systemctl stop kevd` is clean (exit 0, kevd/stopping journaled).
"""
import re
import time

from common import first_event, head, installed_vm, journal, kevctl_json, show, verify_journal
from vmtest import check, wait_until

SANDBOX_RULE = """[[rule]]
name = "vmtest-sandbox"
match = ["source=emit", "type=vmtest.sandbox"]
shell = true
run = '''
set -e
echo state >/var/lib/kevd/vmtest-rule-state
echo runtime >/run/kevd/vmtest-rule-runtime
echo dropin >/var/lib/vmtest-rule/written
echo wrote all three
'''
timeout = "30s"
"""


def run(context):
    vm, figures = installed_vm(context, "main")

    # The package enabled and started the socket, and enabled the service without starting it.
    enabled = vm.run("systemctl is-enabled kevd.socket kevd.service\n", ok=False).out.split()
    check(enabled == ["enabled", "enabled"], f"is-enabled kevd.socket kevd.service: {enabled}")
    check(vm.run("systemctl is-active kevd.socket\n", ok=False).out.strip() == "active",
          "kevd.socket is not active after installation")
    state = vm.run("systemctl is-active kevd.service\n", ok=False).out.strip()
    check(state == "inactive", f"kevd.service is {state} before any client connected (expected inactive)")
    check(vm.run("getent group kevd\n", ok=False).rc == 0, "postinst did not create the kevd group")

    # The first client starts kevd through the socket.
    started = time.monotonic()
    status = vm.run("kevctl status --json\n", timeout=120)
    figures["socket activation"] = f"{time.monotonic() - started:.1f} s"
    check('"head"' in status.out, f"kevctl status gave no status: {status.out!r}")
    props = show(vm, "kevd.service", "ActiveState", "SubState", "StatusText", "MainPID", "TriggeredBy")
    check(props["ActiveState"] == "active", f"kevd.service is {props['ActiveState']} after kevctl status")
    check("kevd.socket" in props.get("TriggeredBy", ""), f"kevd.service TriggeredBy={props.get('TriggeredBy')}")
    activated = vm.run("journalctl -u kevd.service -b --no-pager -o cat | grep -c 'Started kevd.service' || true\n")
    check(activated.out.strip() == "1", f"'Started kevd.service' appears {activated.out.strip()} times")

    # STATUS= as documented, refreshed with the seq.
    check(re.fullmatch(r"ready: \d+ watches, \d+ timers, \d+ rules, \d+ subscribers; seq \d+", props["StatusText"]),
          f"StatusText={props['StatusText']!r}")

    # Reload publishes kevd/reloaded.
    before = head(vm)
    waiter = vm.spawn(f"kevctl wait --from {before + 1} --timeout 120 source=kevd type=reloaded\n")
    vm.run("systemctl reload kevd\n")
    result = waiter.wait(150)
    check(result.rc == 0, f"no kevd/reloaded after systemctl reload (exit {result.rc}): {result.out}")
    props = show(vm, "kevd.service", "ActiveState", "StatusText")
    wait_until(lambda: show(vm, "kevd.service", "StatusText")["StatusText"].startswith("ready:"), 60,
               "STATUS= ready: again after the reload")

    # Sandbox: a rule script writes where the unit allows, and where a drop-in allows.
    vm.run("""mkdir -p /var/lib/vmtest-rule /etc/systemd/system/kevd.service.d
printf '[Service]\\nReadWritePaths=/var/lib/vmtest-rule\\n' >/etc/systemd/system/kevd.service.d/vmtest.conf
systemctl daemon-reload && systemctl restart kevd.service
""", timeout=120)
    with open(f"{vm.share}/data/50-vmtest-sandbox.toml", "w") as f:
        f.write(SANDBOX_RULE)
    vm.run("cp /mnt/vmtest/data/50-vmtest-sandbox.toml /etc/kevd/rules.d/\n")
    wait_until(lambda: "vmtest-sandbox" in vm.run("kevctl rules list\n", ok=False).out, 60,
               "kevd to load the rule file dropped into /etc/kevd/rules.d")
    before = head(vm)
    vm.run("kevctl emit vmtest.sandbox\n")
    done = vm.run(f"kevctl wait --from {before + 1} --timeout 120 'type=rule.*' key=vmtest-sandbox "
                  "'type!=rule.started'\n", timeout=150, ok=False)
    if done.rc != 0 or first_event(done.out).get("type") != "rule.succeeded":
        # Which way it ended, with the script's output kevd keeps in the event.
        raise AssertionError(f"the sandbox rule did not succeed: {done.out}")
    files = vm.run("cat /var/lib/kevd/vmtest-rule-state /run/kevd/vmtest-rule-runtime /var/lib/vmtest-rule/written\n")
    check(files.out.split() == ["state", "runtime", "dropin"], f"the rule's files hold {files.out!r}")

    # [[watch]] under the unit's sandbox: `backend = "auto"` gets fanotify (the unit allows its system calls), and a
    # file created under the root is reported with the pid that made it.
    vm.run("""mkdir -p /srv/vmtest-watch
printf '\n[[watch]]\npath = "/srv/vmtest-watch"\n' >>/etc/kevd/kevd.toml
systemctl reload kevd
""", timeout=120)
    wait_until(lambda: (kevctl_json(vm, "status --json")["sources"].get("fanotify") or {}).get("roots") == 1, 60,
               "the [[watch]] added by a reload to be armed")
    fanotify = kevctl_json(vm, "status --json")["sources"]["fanotify"]
    check(fanotify["backend"] == "fanotify" and fanotify["fallback"] is None,
          f"the service watches with {fanotify['backend']} (fallback: {fanotify['fallback']}), not fanotify")
    before = head(vm)
    waiter = vm.spawn(f"kevctl wait --from {before + 1} --timeout 120 source=inotify type=create "
                      "data.name=made-by-touch\n")
    vm.run("touch /srv/vmtest-watch/made-by-touch\n")
    result = waiter.wait(150)
    check(result.rc == 0, f"no inotify/create for a file made under the fanotify root: {result.out}")
    check(isinstance(first_event(result.out)["data"].get("pid"), int), f"the create has no data.pid: {result.out}")

    # The watchdog: a wedged loop is killed and restarted; seq continues without a gap.
    props = show(vm, "kevd.service", "MainPID", "NRestarts")
    old_pid, restarts = props["MainPID"], int(props["NRestarts"])
    last = int(vm.run("kevctl emit vmtest.before-wedge\n").out.strip())
    started = time.monotonic()
    vm.run(f"kill -STOP {old_pid}\n")

    def restarted():
        p = show(vm, "kevd.service", "MainPID", "NRestarts", "ActiveState")
        return p["ActiveState"] == "active" and p["MainPID"] not in ("0", old_pid) and int(p["NRestarts"]) > restarts

    wait_until(restarted, 180, "systemd's watchdog to restart the stopped kevd", interval=1)
    figures["watchdog restart"] = f"{time.monotonic() - started:.0f} s (WatchdogSec=30s)"
    log = vm.run("journalctl -u kevd.service -b --no-pager -o cat\n").out
    check("Watchdog timeout" in log, "the restart was not the watchdog's (no 'Watchdog timeout' in the journal)")
    after = int(vm.run("kevctl emit vmtest.after-wedge\n").out.strip())
    seqs = [e["seq"] for e in journal(vm, f"--from {last}")]
    check(seqs == list(range(last, seqs[-1] + 1)), f"seq gaps after the watchdog restart: {seqs}")
    check(after in seqs, f"the emit after the restart (seq {after}) is not in the journal")
    verify_journal(vm)

    # A clean stop.
    vm.run("systemctl stop kevd.service\n", timeout=120)
    props = show(vm, "kevd.service", "ActiveState", "Result", "ExecMainStatus")
    check(props["ActiveState"] == "inactive" and props["Result"] == "success" and props["ExecMainStatus"] == "0",
          f"after systemctl stop: {props}")
    last_event = journal(vm, "source=kevd")[-1]
    check(last_event["type"] == "stopping", f"the journal's last kevd event is {last_event['type']}, not stopping")
    vm.run("rm -f /etc/kevd/rules.d/50-vmtest-sandbox.toml\n")
    return vm, figures
