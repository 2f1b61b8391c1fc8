"""Scenario: the package's removal, as an administrator does it (runs last on the VM of the other scenarios).

- `apt-get remove kevd` stops kevd and its socket and removes the binaries and units, and keeps the
  configuration (/etc/kevd) and the journal (/var/lib/kevd);
- `apt-get purge kevd` then removes /etc/kevd and /var/lib/kevd, and keeps the kevd group (Debian policy: a
  system group may still own files elsewhere).
"""
from common import installed_vm
from vmtest import check


def run(context):
    vm, figures = installed_vm(context, "main")
    # kevd running, with a journal, before the removal.
    vm.run("kevctl emit vmtest.before-remove >/dev/null\n", timeout=120)

    vm.run("DEBIAN_FRONTEND=noninteractive apt-get remove -y kevd\n", timeout=600)
    states = vm.run("systemctl is-active kevd.service kevd.socket\n", ok=False).out.split()
    check(all(s in ("inactive", "failed") for s in states) and len(states) == 2,
          f"after apt-get remove, kevd.service and kevd.socket are {states}")
    gone = vm.run("for f in /usr/bin/kevd /usr/bin/kevctl /lib/systemd/system/kevd.service "
                  "/lib/systemd/system/kevd.socket; do [ -e $f ] && echo $f; done; true\n").out.split()
    check(not gone, f"apt-get remove left {gone}")
    kept = vm.run("ls -d /etc/kevd/kevd.toml /var/lib/kevd/journal\n", ok=False)
    check(kept.rc == 0, f"apt-get remove did not keep the configuration and the journal: {kept.out}")

    vm.run("DEBIAN_FRONTEND=noninteractive apt-get purge -y kevd\n", timeout=600)
    left = vm.run("ls -d /etc/kevd /var/lib/kevd /run/kevd 2>/dev/null; true\n").out.split()
    check(not left, f"apt-get purge left {left}")
    check(vm.run("getent group kevd\n", ok=False).rc == 0, "apt-get purge removed the kevd group")
    check(vm.run("dpkg -s kevd\n", ok=False).rc != 0, "dpkg -s kevd still finds the package after the purge")
    figures["remove, purge"] = "clean"
    return vm, figures
