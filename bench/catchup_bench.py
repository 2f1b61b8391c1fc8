#!/usr/bin/env python3
"""File catch-up (`[[watch]] catchup`) on a big tree: how long the start-up diff takes, kevd's RSS, the snapshot's
size per entry, and how long `status` waited meanwhile (the loop never held), with a client asking `status`
every 10 ms.

    nice -n 19 python3 bench/catchup_bench.py --count 100k        # 100,000 entries, 1% changed while stopped
    nice -n 19 python3 bench/catchup_bench.py --count 1M --backend fanotify

Runs kevd three times on one tree: the first start records the snapshot (nothing to compare with), then kevd
is stopped, 1% of the entries are changed (a third written, a third deleted, a third new files), and the second
start's catch-up is measured; the third start (nothing changed) measures a diff that finds nothing. Warm cache.
Standard library only.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time

from benchlib import DEFAULT_KEVD, kevd_daemon_config, parse_count
from benchlib import log as _log
from crawl_bench import StatusProbe, rss_kib


def log(*args):
    _log("catchup", " ".join(str(a) for a in args))


def make_tree(base, count):
    """`count` entries: directories of 1,000 files each (1 directory + 999 files)."""
    tree = os.path.join(base, "tree")
    shutil.rmtree(tree, ignore_errors=True)
    os.mkdir(tree)
    made = 0
    d = 0
    while made < count:
        directory = os.path.join(tree, f"d{d}")
        os.mkdir(directory)
        made += 1
        for i in range(min(999, count - made)):
            with open(os.path.join(directory, f"f{i}"), "w") as f:
                f.write("x")
            made += 1
        d += 1
    return tree


def change(tree, fraction):
    """Writes, deletes and makes files: `fraction` of the tree's files, a third each. Returns how many."""
    files = []
    for directory, _, names in os.walk(tree):
        files.extend(os.path.join(directory, n) for n in names)
    files.sort()
    step = max(1, int(1 / fraction))
    chosen = files[::step]
    for i, path in enumerate(chosen):
        if i % 3 == 0:
            with open(path, "a") as f:
                f.write("more")
        elif i % 3 == 1:
            os.unlink(path)
        else:
            with open(path + ".new", "w") as f:
                f.write("new")
    return len(chosen)


def run(kevd, conf, sock, expect_events):
    """One start: the time until `sources.file_catchup.done`, the events it published, RSS, status waits."""
    start = time.monotonic()
    proc = subprocess.Popen([kevd, "--config", conf, "--stdout"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    probe = StatusProbe(sock)
    catchup_lines = [0]

    def read_stdout():
        for line in proc.stdout:
            if b'"catchup":true' in line:
                catchup_lines[0] += 1

    threading.Thread(target=read_stdout, daemon=True).start()
    status = {}
    peak_rss = 0
    try:
        deadline = start + 600
        while time.monotonic() < deadline:
            rss = rss_kib(proc.pid, "VmRSS") or 0
            peak_rss = max(peak_rss, rss)
            if probe.samples:
                reply_status = probe_status(sock)
                if reply_status and reply_status.get("done"):
                    status = reply_status
                    break
            time.sleep(0.01)
        done_at = time.monotonic()
        while catchup_lines[0] < status.get("published", 0) and time.monotonic() < done_at + 60:
            time.sleep(0.01)
        result = {
            "catchup_s": round(done_at - start, 3),
            "published": status.get("published"), "events_seen": catchup_lines[0],
            "job_s": round(status.get("last_seconds", 0), 3),
            "longest_batch_ms": round(status.get("longest_batch_seconds", 0) * 1000, 2),
            "rss_peak_kib": rss_kib(proc.pid, "VmHWM"), "rss_after_kib": rss_kib(proc.pid, "VmRSS"),
        }
        window = probe.window(start, done_at)
        if window:
            result["status_longest_wait_ms"] = window["longest_wait_ms"]
            result["status_p99_wait_ms"] = window["p99_wait_ms"]
        result["loop_turn_max_ms"] = round(loop_turn_max(sock) * 1000, 1)
        return result
    finally:
        probe.stop.set()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def ask(sock_path):
    import socket
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(sock_path)
    s.sendall(b'{"op":"status"}\n')
    reader = s.makefile("rb")
    while True:
        line = reader.readline()
        if not line:
            return {}
        reply = json.loads(line)
        if "ok" in reply:
            s.close()
            return reply


def probe_status(sock_path):
    try:
        return (ask(sock_path).get("sources") or {}).get("file_catchup") or {}
    except OSError:
        return {}


def loop_turn_max(sock_path):
    try:
        stats = ask(sock_path).get("stats") or {}
        return stats.get("loop_turn_max_seconds", 0)
    except OSError:
        return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", default="100k", help="entries in the tree (100k, 1M)")
    parser.add_argument("--backend", default="inotify", choices=["inotify", "fanotify"])
    parser.add_argument("--fraction", type=float, default=0.01, help="share of the files changed while stopped")
    parser.add_argument("--kevd", default=DEFAULT_KEVD)
    parser.add_argument("--dir", default="/var/tmp", help="where the tree is made")
    args = parser.parse_args()
    count = parse_count(args.count)
    base = tempfile.mkdtemp(prefix="kevd-catchup-", dir=args.dir)
    try:
        log(f"making {count} entries in {base}")
        tree = make_tree(base, count)
        conf = os.path.join(base, "kevd.toml")
        sock = os.path.join(base, "kevd.sock")
        with open(conf, "w") as f:
            f.write(kevd_daemon_config(f"{base}/state", sock)
                    + f'[[watch]]\npath = "{tree}"\nrecursive = true\nbackend = "{args.backend}"\n')
        first = run(args.kevd, conf, sock, 0)
        snapshots = os.path.join(base, "state", "catchup")
        snapshot_bytes = sum(os.path.getsize(os.path.join(snapshots, n)) for n in os.listdir(snapshots))
        changed = change(tree, args.fraction)
        second = run(args.kevd, conf, sock, changed)
        third = run(args.kevd, conf, sock, 0)
        results = {"count": count, "backend": args.backend, "changed": changed, "snapshot_bytes": snapshot_bytes,
                   "snapshot_bytes_per_entry": round(snapshot_bytes / count, 1),
                   "first": first, "second": second, "third": third}
        print(json.dumps(results, indent=1))
        print(f"| entries | backend | changed | start | catch-up s | events | job s | peak RSS MiB | longest batch ms | longest status wait ms | snapshot B/entry |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for name, r in (("first (records)", first), ("second (1% changed)", second), ("third (nothing changed)", third)):
            print(f"| {count:,} | {args.backend} | {changed if name.startswith('second') else 0} | {name} | {r['catchup_s']} "
                  f"| {r['published']} | {r['job_s']} | {round((r['rss_peak_kib'] or 0) / 1024, 1)} "
                  f"| {r['longest_batch_ms']} | {r.get('status_longest_wait_ms')} | {results['snapshot_bytes_per_entry']} |")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
