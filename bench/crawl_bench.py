#!/usr/bin/env python3
"""kevd's crawl of a big tree, against inotifywait's, with a client asking `status` every 10 ms.

See bench/CRAWL.md. Root: it drops the page cache (cold runs) and lowers fs.inotify.max_queued_events for the
overflow run (restored afterwards). Standard library only.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from benchlib import DEFAULT_KEVD, kevd_daemon_config, parse_count, sysctl
from benchlib import log as _log


def log(*args):
    _log("crawl", " ".join(str(a) for a in args))


def make_tree(base, count):
    """`count` directories as base/tree/dA/dB/dC, 100 per level (1,000 leaves per top directory)."""
    tree = os.path.join(base, "tree")
    marker = os.path.join(base, f"tree-{count}.done")
    if os.path.exists(marker):
        return tree
    shutil.rmtree(tree, ignore_errors=True)
    os.mkdir(tree)
    made = 0
    a = 0
    while made < count:
        top = os.path.join(tree, f"d{a}")
        os.mkdir(top)
        made += 1
        for b in range(100):
            if made >= count:
                break
            mid = os.path.join(top, f"e{b}")
            os.mkdir(mid)
            made += 1
            for c in range(100):
                if made >= count:
                    break
                os.mkdir(os.path.join(mid, f"f{c}"))
                made += 1
        a += 1
    open(marker, "w").close()
    return tree


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def major_faults(pid):
    """Page faults that read from the disk (field 12 of /proc/PID/stat): kevd's own code, cold."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[9])
    except (OSError, IndexError, ValueError):
        return None


def runqueue_wait_s(pid):
    """Seconds kevd's loop thread was runnable but waited for a CPU (/proc/PID/task/PID/schedstat, field 2)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/schedstat") as f:
            return round(int(f.read().split()[1]) / 1e9, 3)
    except (OSError, IndexError, ValueError):
        return None


def rss_kib(pid, field="VmRSS"):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class StatusProbe:
    """Sends `status` every `interval` s on one connection; keeps (sent, answered) times and the crawl fields."""

    def __init__(self, path, interval=0.01):
        self.path = path
        self.interval = interval
        self.samples = []  # (sent, answered, crawl dict)
        self.stop = threading.Event()
        self.connected_at = None
        self.last_crawl = {}
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        try:
            self.talk()
        except OSError:
            pass  # kevd stopped

    def talk(self):
        sock = None
        while not self.stop.is_set():
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(self.path)
                break
            except OSError:
                sock.close()
                sock = None
                time.sleep(0.001)
        if sock is None:
            return
        self.connected_at = time.monotonic()
        reader = sock.makefile("rb")
        next_at = time.monotonic()
        while not self.stop.is_set():
            sent = time.monotonic()
            sock.sendall(b'{"op":"status"}\n')
            while True:
                line = reader.readline()
                if not line:
                    return
                reply = json.loads(line)
                if "ok" in reply:
                    break
            answered = time.monotonic()
            crawl = (reply.get("sources") or {}).get("inotify", {}).get("crawl", {})
            self.last_crawl = crawl
            self.samples.append((sent, answered, crawl))
            next_at += self.interval
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_at = time.monotonic()

    def window(self, start, end):
        """The longest a request waited for its answer, and the longest time between answers, in [start, end]."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        if not inside:
            return None
        longest_wait = max(a - s for s, a, _ in inside)
        answers = [a for _, a, _ in inside]
        longest_gap = max([b - a for a, b in zip(answers, answers[1:])] or [0])
        crawling = sum(1 for _, _, c in inside if c.get("running"))
        waits = sorted(a - s for s, a, _ in inside)
        return {
            "p99_wait_ms": round(waits[int(len(waits) * 0.99)] * 1000, 1),
            "waits_over_50ms": sum(1 for w in waits if w > 0.05),
            "requests": len(inside), "answered_while_crawling": crawling,
            "longest_wait_ms": round(longest_wait * 1000, 1), "longest_gap_ms": round(longest_gap * 1000, 1),
        }


def run_inotifywait(tree, cold):
    if cold:
        drop_caches()
    start = time.monotonic()
    proc = subprocess.Popen(
        ["inotifywait", "-m", "-r", "-e", "create", "--format", "%e %w%f", tree],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ready = None
    for line in proc.stderr:
        if b"Watches established" in line:
            ready = time.monotonic() - start
            break
    time.sleep(0.2)
    rss = rss_kib(proc.pid)
    anon = rss_kib(proc.pid, "RssAnon")
    proc.send_signal(signal.SIGTERM)
    proc.wait()
    return {"consumer": "inotifywait", "cold": cold, "ready_s": round(ready, 3) if ready else None, "rss_kib": rss, "rss_anon_kib": anon}


def run_kevd(kevd, tree, cold, overflow, state_base):
    state = tempfile.mkdtemp(prefix="kevd-crawl-", dir=state_base)
    conf = os.path.join(state, "kevd.toml")
    with open(conf, "w") as f:
        f.write(kevd_daemon_config(f"{state}/state", f"{state}/kevd.sock")
                + f'[[watch]]\npath = "{tree}"\nrecursive = true\nevents = ["create"]\n'
                # The crawl is the inotify backend's (fanotify has none: bench/run fanotify).
                + 'backend = "inotify"\n')
    old_queue = None
    if overflow:
        # Read by inotify_init1 when kevd starts: a tiny queue for this instance only, restored right after.
        old_queue = sysctl("fs.inotify.max_queued_events", 64)
    if cold:
        drop_caches()
    result = {"consumer": "kevd", "cold": cold, "overflow": overflow}
    start = time.monotonic()
    proc = subprocess.Popen([kevd, "--config", conf, "--stdout"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    probe = StatusProbe(f"{state}/kevd.sock")
    lines = []
    started_at = [None]
    overflow_at = [None]
    got = threading.Condition()

    def read_stdout():
        for line in proc.stdout:
            now = time.monotonic()
            with got:
                if b'"type":"started"' in line and started_at[0] is None:
                    started_at[0] = now
                    got.notify_all()
                if b'"type":"overflow"' in line and overflow_at[0] is None:
                    overflow_at[0] = now
                    lines.append(line)
                    got.notify_all()

    reader = threading.Thread(target=read_stdout, daemon=True)
    reader.start()
    try:
        with got:
            got.wait_for(lambda: started_at[0] is not None, timeout=300)
        if old_queue is not None:
            sysctl("fs.inotify.max_queued_events", old_queue)
        if started_at[0] is None:
            raise RuntimeError("kevd did not start")
        result["ready_s"] = round(started_at[0] - start, 3)
        result["major_faults"] = major_faults(proc.pid)
        result["loop_runqueue_wait_s"] = runqueue_wait_s(proc.pid)
        result["startup"] = probe.window(probe.connected_at or start, started_at[0])
        time.sleep(0.05)
        result["startup_longest_slice_ms"] = round(probe.last_crawl.get("longest_slice_seconds", 0) * 1000, 1)
        time.sleep(0.2)
        result["rss_kib"] = rss_kib(proc.pid)
        result["rss_anon_kib"] = rss_kib(proc.pid, "RssAnon")
        if overflow:
            if cold:
                drop_caches()
            burst_start = time.monotonic()
            burst = os.path.join(tree, "d0", "burst")
            os.makedirs(burst, exist_ok=True)
            for i in range(1000):
                open(os.path.join(burst, f"f{i}"), "w").close()
            with got:
                got.wait_for(lambda: overflow_at[0] is not None, timeout=300)
            if overflow_at[0] is None:
                raise RuntimeError("no overflow")
            # The overflow is published when found; the rescan runs after it, until status says it is done.
            deadline = time.monotonic() + 300
            seen_running = False
            while time.monotonic() < deadline:
                crawl = probe.last_crawl
                if crawl.get("rescan"):
                    seen_running = True
                if seen_running and not crawl.get("running"):
                    break
                time.sleep(0.005)
            rescan_end = time.monotonic()
            result["rescan_s"] = round(rescan_end - overflow_at[0], 3)
            result["rescan"] = probe.window(burst_start, rescan_end)
            time.sleep(0.05)
            result["rescan_longest_slice_ms"] = round(probe.last_crawl.get("longest_slice_seconds", 0) * 1000, 1)
            result["major_faults_end"] = major_faults(proc.pid)
            shutil.rmtree(burst)
        time.sleep(0.1)
        result["rss_kib_end"] = rss_kib(proc.pid)
        result["rss_peak_kib"] = rss_kib(proc.pid, "VmHWM")
    finally:
        if old_queue is not None:
            sysctl("fs.inotify.max_queued_events", old_queue)
        probe.stop.set()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(state, ignore_errors=True)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kevd", default=DEFAULT_KEVD, help=f"kevd binary (default {DEFAULT_KEVD}, which bench/run builds)")
    parser.add_argument("--dirs", type=parse_count, default=100_000, help="directories in the tree (default 100,000)")
    parser.add_argument("--base", default="/var/tmp/kevd-crawl-bench", help="where the tree is made (a disk fs)")
    parser.add_argument("--warm", action="store_true", help="also warm runs")
    parser.add_argument("--no-inotifywait", action="store_true")
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root: drops the page cache and sets fs.inotify.max_queued_events")
    os.makedirs(args.base, exist_ok=True)
    old_watches = int(sysctl("fs.inotify.max_user_watches"))
    if old_watches < args.dirs * 2 + 1000:
        sysctl("fs.inotify.max_user_watches", args.dirs * 2 + 1000)
    results = []
    try:
        log(f"making {args.dirs} directories under {args.base}")
        tree = make_tree(args.base, args.dirs)
        for cold in ([True, False] if args.warm else [True]):
            if not args.no_inotifywait:
                results.append(run_inotifywait(tree, cold))
                log(json.dumps(results[-1]))
            results.append(run_kevd(args.kevd, tree, cold, overflow=False, state_base="/var/tmp"))
            log(json.dumps(results[-1]))
        results.append(run_kevd(args.kevd, tree, True, overflow=True, state_base="/var/tmp"))
        log(json.dumps(results[-1]))
    finally:
        sysctl("fs.inotify.max_user_watches", old_watches)
    print("| consumer | cache | ready s | RSS MiB | anon RSS MiB | peak RSS MiB | longest status wait ms (start-up) | longest gap ms | answered while crawling | rescan s | longest wait ms (rescan) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        mib = lambda k: f"{r[k] / 1024:.1f}" if r.get(k) else "-"
        s = r.get("startup") or {}
        o = r.get("rescan") or {}
        name = r["consumer"] + (" (overflow run)" if r.get("overflow") else "")
        print(f"| {name} | {'cold' if r['cold'] else 'warm'} | {r.get('ready_s')} | {mib('rss_kib')} | {mib('rss_anon_kib')} | {mib('rss_peak_kib')} | "
              f"{s.get('longest_wait_ms', '-')} | {s.get('longest_gap_ms', '-')} | {s.get('answered_while_crawling', '-')} | "
              f"{r.get('rescan_s', '-')} | {o.get('longest_wait_ms', '-')} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
