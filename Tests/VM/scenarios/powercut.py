"""Scenario 3, power cuts: several clients emit while qemu is SIGKILLed (with the disk opened cache=none, that is
a power cut for the guest: what it synced survives, nothing else), repeated, each boot on the same disk.

Each client loops `kevctl emit vmtest.power client=C n=N` and, only after kevctl printed the seq (kevd
acknowledged the event as durable), appends "C N SEQ" to a file in the host's share: the host has those lines
whatever happens to the guest. After each boot, as a user would check:
- every acknowledged emit is in kevd's journal exactly once, with the seq it was acknowledged with, and no emit
  (acknowledged or not) is in it twice;
- `kevctl journal --verify` is clean;
- seq continues: a new emit gets a seq above everything acknowledged before the cut.
"""
import os
import random
import time

from common import installed_vm, journal, verify_journal
from vmtest import ScenarioFailed, check, wait_until

CLIENTS = 4
ACKS_BEFORE_CUT = 40


def acknowledged(share, round_number):
    """(client, n) -> seq, from the complete lines the clients wrote to the share in this round."""
    acks = {}
    for client in range(CLIENTS):
        path = os.path.join(share, "data", f"acks-{round_number}-{client}")
        if not os.path.exists(path):
            continue
        with open(path) as f:
            text = f.read()
        for line in text.splitlines(keepends=True):
            if not line.endswith("\n"):
                continue  # cut mid-write: not known to the host as acknowledged
            c, n, seq = line.split()
            acks[(int(c), int(n))] = int(seq)
    return acks


def count_acks(share, round_number):
    return len(acknowledged(share, round_number))


def run(context):
    vm, figures = installed_vm(context, "power")
    rounds = context["power_cuts"]
    rng = random.Random(17)
    all_acks = {}
    boots = []
    lost = duplicated = 0
    vm.run("systemctl start kevd.service\n", timeout=120)
    for round_number in range(1, rounds + 1):
        clients = "".join(
            f"(n=0; while :; do n=$((n+1)); s=$(kevctl emit vmtest.power round={round_number} client={c} n=$n) "
            f"&& echo \"{c} $n $s\" >>/mnt/vmtest/data/acks-{round_number}-{c}; done) &\n"
            for c in range(CLIENTS))
        vm.spawn(clients + "wait\n")
        wait_until(lambda: count_acks(vm.share, round_number) >= ACKS_BEFORE_CUT, 300,
                   f"{ACKS_BEFORE_CUT} acknowledged emits in round {round_number}", interval=0.1)
        # The cut lands at a random point of the clients' work, not right after a threshold was crossed.
        deadline = time.monotonic() + rng.uniform(0, 1.5)
        while time.monotonic() < deadline:
            time.sleep(0.01)
        vm.power_cut()
        acks = acknowledged(vm.share, round_number)
        for (c, n), seq in acks.items():
            all_acks[(round_number, c, n)] = seq

        boots.append(vm.start())
        # kevd starts at boot (kevd.service is enabled); the first kevctl call would start it anyway.
        vm.run("kevctl status >/dev/null\n", timeout=120)
        verify_journal(vm)
        seen = {}
        max_seq = 0
        for event in journal(vm, "source=emit type=vmtest.power", timeout=300):
            d = event["data"]
            k = (d["round"], d["client"], d["n"])
            seen.setdefault(k, []).append(event["seq"])
            max_seq = max(max_seq, event["seq"])
        for k, seqs in seen.items():
            if len(seqs) > 1:
                duplicated += 1
                raise ScenarioFailed(f"round {round_number}: emit {k} is in the journal {len(seqs)} times: {seqs}")
        for k, seq in all_acks.items():
            if seen.get(k) != [seq]:
                lost += 1
                raise ScenarioFailed(f"round {round_number}: acknowledged emit {k} (seq {seq}) is in the journal "
                                     f"as {seen.get(k)}")
        after = int(vm.run("kevctl emit vmtest.power-after-boot\n").out.strip())
        check(after > max(all_acks.values()), f"seq did not continue: {after} after acknowledged "
                                              f"{max(all_acks.values())}")
    figures["power cuts"] = rounds
    figures["acknowledged emits"] = len(all_acks)
    figures["lost"] = lost
    figures["duplicated"] = duplicated
    figures["boot after cut"] = f"{min(boots):.1f}-{max(boots):.1f} s"
    return vm, figures
