#!/usr/bin/env python3
"""kevd's fanotify backend (issue 19) against inotifywait -m -r and fsnotifywait -m -S, in the same run.

Part 1 (startup): a tree of --dirs directories (default 100,000; crawl_bench.py's layout) on a disk file system.
Each consumer is started on it, cold cache (page cache dropped first: the tree, and the consumer's executable and
libraries too) and warm (the tree read by an untimed inotifywait pass, each executable run once untimed); measured: time from exec to ready
(kevd: its `kevd`/`started` line; inotifywait and fsnotifywait: "Watches established." on stderr), CPU used by
then (utime+stime, so the kernel work of adding watches counts), RSS then and one second later. Consumers: kevd
with `backend = "fanotify"`, kevd with `backend = "inotify"` (its crawl), inotifywait -m -r, fsnotifywait -m -S.

Part 2 (burst): kevd_gen's create/write 4 bytes/close/delete workload (4 events a file) in a directory on a tmpfs
of its own (a fanotify file-system mark sees all of its file system: the tmpfs keeps the rest of the machine out
of the count), measured as kevd_bench.py measures the inotify part (events captured, overflows, CPU s per million
events). Consumers: kevd with `backend = "fanotify"`, kevd with `backend = "inotify"`, fsnotifywait -m -S (which
exits at its first queue overflow: "No fid in fanotify event", inotify-tools 3.22), inotifywait -m -r.

Root (fanotify, drop_caches, mount). Never asserts timings: prints tables, writes JSON to bench/results/.
Standard library only.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path

import kevd_bench as kb
from benchlib import BENCH_DIR, DEFAULT_KEVD, REPO_DIR, kevd_daemon_config, parse_count, sysctl, toml_str
from benchlib import log as _log
from crawl_bench import drop_caches, make_tree, rss_kib

CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    _log("fanotify", msg)


def cpu_s(pid: int):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return round((int(fields[11]) + int(fields[12])) / CLK_TCK, 3)
    except (OSError, IndexError, ValueError):
        return None


# --------------------------------------------------------------------------
# Part 1: start-up on a big tree
# --------------------------------------------------------------------------

def kevd_config(state: str, tree: str, backend: str) -> str:
    return (kevd_daemon_config(f"{state}/state", f"{state}/kevd.sock")
            + f'[[watch]]\npath = {toml_str(tree)}\nrecursive = true\nevents = ["create"]\nbackend = "{backend}"\n')


def startup_run(name: str, argv: list[str], ready_on_stderr: bool, ready_marker: bytes, cold: bool,
                timeout: float) -> dict:
    """Starts one consumer, waits for its ready line, samples CPU and RSS, stops it."""
    if cold:
        drop_caches()
    result: dict = {"consumer": name, "cache": "cold" if cold else "warm"}
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    ready_at = [None]
    started_line = [b""]
    got = threading.Event()

    def drain(stream, watch: bool) -> None:
        for line in stream:
            if watch and ready_at[0] is None and ready_marker in line:
                ready_at[0] = time.monotonic()
                started_line[0] = line
                got.set()

    threads = [threading.Thread(target=drain, args=(proc.stdout, not ready_on_stderr), daemon=True),
               threading.Thread(target=drain, args=(proc.stderr, ready_on_stderr), daemon=True)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + timeout
        while not got.wait(0.05):
            if proc.poll() is not None or time.monotonic() > deadline:
                break
        if ready_at[0] is None:
            result["status"] = f"not ready within {timeout:.0f}s (exit {proc.poll()})"
            return result
        result["ready_ms"] = round((ready_at[0] - start) * 1000, 1)
        result["cpu_at_ready_s"] = cpu_s(proc.pid)
        result["rss_at_ready_kib"] = rss_kib(proc.pid)
        if name.startswith("kevd"):
            try:
                data = json.loads(started_line[0]).get("data", {})
                result["watch_backend"] = data.get("watch_backend")
            except ValueError:
                pass
        time.sleep(1.0)
        result["rss_1s_kib"] = rss_kib(proc.pid)
        result["rss_peak_kib"] = rss_kib(proc.pid, "VmHWM")
        result["cpu_1s_s"] = cpu_s(proc.pid)
        result["status"] = "ok"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return result


def bench_startup(args) -> list[dict]:
    os.makedirs(args.base, exist_ok=True)
    if args.tree_tmpfs:
        # A tmpfs of its own (about 1 KiB of memory per directory): a 1M-directory tree in seconds, no disk, and
        # unmounted at the end. "cold" then drops only the consumers' executables, not the tree.
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={max(1, args.dirs // 250_000)}g,"
                        f"nr_inodes={args.dirs * 2 + 1000}", "tmpfs", args.base], check=True)
    try:
        return bench_startup_on_tree(args)
    finally:
        if args.tree_tmpfs:
            subprocess.run(["umount", "-l", args.base], check=False)


def bench_startup_on_tree(args) -> list[dict]:
    log(f"making {args.dirs:,} directories under {args.base} (kept for the next run)")
    tree = make_tree(args.base, args.dirs)
    state = tempfile.mkdtemp(prefix="kevd-fanotify-", dir="/var/tmp")
    results = []
    old_watches = int(sysctl("fs.inotify.max_user_watches"))
    if old_watches < args.dirs * 2 + 1000:
        sysctl("fs.inotify.max_user_watches", args.dirs * 2 + 1000)
    try:
        consumers = []
        for backend in ("fanotify", "inotify"):
            conf = os.path.join(state, f"{backend}.toml")
            with open(conf, "w") as f:
                f.write(kevd_config(os.path.join(state, backend), tree, backend))
            os.makedirs(os.path.join(state, backend), exist_ok=True)
            consumers.append((f"kevd ({backend})", [args.kevd, "--config", conf, "--stdout"], False,
                              b'"type":"started"'))
        consumers.append(("inotifywait -m -r", ["inotifywait", "-m", "-r", "-e", "create", "--format", "%e %w%f",
                                                tree], True, b"Watches established"))
        consumers.append(("fsnotifywait -m -S", ["fsnotifywait", "-m", "-S", "-e", "create", "--format",
                                                 "%e %w%f", tree], True, b"Watches established"))
        for cold in (True, False):
            if not cold:
                # Warm: one untimed pass of inotifywait reads every directory inode into the cache.
                if not args.tree_tmpfs:
                    startup_run("warm-up", consumers[2][1], True, consumers[2][3], False, args.ready_timeout)
                # And each consumer's executable and shared libraries: the last cold run dropped them, and nothing
                # since has loaded kevd's (19 MB and some 25 libraries, against fsnotifywait's libc), so kevd's
                # "warm" start used to load them from the disk (81 to 91 ms, against 13 to 16 warm).
                for _, argv, _, _ in consumers:
                    subprocess.run([argv[0], "--help"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, check=False)
            for name, argv, on_stderr, marker in consumers:
                if name.startswith("kevd (inotify)") and args.no_kevd_inotify:
                    continue
                if name.startswith("inotifywait") and args.no_inotifywait:
                    continue
                r = startup_run(name, argv, on_stderr, marker, cold, args.ready_timeout)
                r["dirs"] = args.dirs
                log(json.dumps(r))
                results.append(r)
    finally:
        sysctl("fs.inotify.max_user_watches", old_watches)
        shutil.rmtree(state, ignore_errors=True)
    return results


def print_startup(results: list[dict]) -> None:
    print("| consumer | directories | cache | ready ms | CPU s at ready | RSS MiB at ready | RSS MiB 1 s later | "
          "peak RSS MiB | status |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        mib = lambda k: f"{r[k] / 1024:.1f}" if r.get(k) else "-"
        print(f"| {r['consumer']} | {r.get('dirs', 0):,} | {r['cache']} | {r.get('ready_ms', '-')} | "
              f"{r.get('cpu_at_ready_s', '-')} | {mib('rss_at_ready_kib')} | {mib('rss_1s_kib')} | "
              f"{mib('rss_peak_kib')} | {r.get('status')} |")


# --------------------------------------------------------------------------
# Part 2: the event burst
# --------------------------------------------------------------------------

def bench_burst(args, gen: Path, work: Path) -> list[kb.Row]:
    fs = work / "fs"
    fs.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512m", "tmpfs", str(fs)], check=True)
    rows: list[kb.Row] = []
    try:
        for rep in range(args.repeat):
            for name in args.consumers:
                tmp = Path(tempfile.mkdtemp(prefix=f"burst-{name}-", dir=work))
                watched = fs / f"watched-{name}-{rep}"
                watched.mkdir()
                label = {"kevd": "kevd (fanotify)", "kevd-inotify": "kevd (inotify)", "fsnotifywait": "fsnotifywait -m -S",
                         "inotifywait": "inotifywait -m -r"}[name]
                row = kb.Row("burst", label, args.files, 4 * args.files)
                events = ["-e", "create", "-e", "modify", "-e", "close_write", "-e", "delete", "-e", "q_overflow"]
                if name == "inotifywait":
                    c = kb.Consumer(["inotifywait", "-m", "-r", *events, "--format", "%e %w%f", str(watched)],
                                    "inotifywait", gen, tmp, lambda c: b"Watches established" in c.stderr_buf,
                                    None, ready_on_stderr=True)
                elif name == "fsnotifywait":
                    # -S marks the tmpfs; the only changes on it are the workload's. Without -e q_overflow:
                    # fanotify_mark refuses FAN_Q_OVERFLOW in a mask (EINVAL); its losses show as events missing.
                    # stdbuf -oL: its stdout is block-buffered into a pipe (inotifywait's is not), and the last
                    # block, never flushed, would count as lost.
                    c = kb.Consumer(["stdbuf", "-oL", "fsnotifywait", "-m", "-S", *events[:-2], "--format", "%e %w%f", str(watched)],
                                    "fsnotifywait", gen, tmp, lambda c: b"Watches established" in c.stderr_buf,
                                    None, ready_on_stderr=True)
                else:
                    conf = kb.write_kevd_config(tmp, (
                        "\n[[watch]]\n"
                        f"path = {toml_str(str(watched))}\n"
                        "recursive = true\n"
                        f'backend = "{"inotify" if name == "kevd-inotify" else "fanotify"}"\n'
                        'events = ["create", "modify", "close_write", "delete"]\n'), args)
                    c = kb.Consumer([args.kevd, "--config", str(conf), "--stdout"], "kevd-inotify", gen, tmp,
                                    kb.kevd_ready, None)
                row = kb.measure(c, row, [str(gen), "files", str(watched), str(args.files)], 4 * args.files, args,
                                 args.ready_timeout)
                kb.remove_work_dir(tmp)
                shutil.rmtree(watched, ignore_errors=True)
                rows.append(row)
                kb.print_row_progress(row)
    finally:
        kb.cleanup_children()
        subprocess.run(["umount", "-l", str(fs)], check=False)
    return rows


# --------------------------------------------------------------------------

def parse_args(argv: list[str]):
    p = argparse.ArgumentParser(prog="bench/run fanotify", description=__doc__.split("\n\n")[0])
    p.add_argument("--kevd", default=DEFAULT_KEVD, help=f"kevd binary (default {DEFAULT_KEVD}, which bench/run builds)")
    p.add_argument("--dirs", type=parse_count, default=100_000,
                   help="directories in the start-up tree (default 100k; 1m takes about 4 GB of ext4 blocks and "
                        "minutes to make and to crawl)")
    p.add_argument("--base", default="/var/tmp/kevd-fanotify-bench", help="where the tree is made (a disk fs)")
    p.add_argument("--files", type=parse_count, default=250_000,
                   help="files in the burst, 4 events each (default 250k: 1,000,000 events)")
    p.add_argument("--only", choices=["startup", "burst"], help="run one part")
    p.add_argument("--consumers", default="kevd,kevd-inotify,fsnotifywait,inotifywait",
                   help="burst consumers, in this order (default kevd,kevd-inotify,fsnotifywait,inotifywait; kevd is "
                        "kevd with backend fanotify)")
    p.add_argument("--no-kevd-inotify", action="store_true", help="start-up: leave out kevd with backend inotify")
    p.add_argument("--no-inotifywait", action="store_true", help="start-up: leave out inotifywait -m -r")
    p.add_argument("--tree-tmpfs", action="store_true",
                   help="start-up: make the tree on a tmpfs mounted at --base for the run (1m: seconds, ~1 GB of "
                        "memory), e.g. --dirs 1m --tree-tmpfs --no-kevd-inotify --no-inotifywait")
    p.add_argument("--repeat", type=int, default=1, help="burst: repeat each consumer K times (default 1)")
    p.add_argument("--kevd-state-dir", default="/var/tmp", help="burst: where kevd's journal goes (default /var/tmp)")
    p.add_argument("--kevd-journal-max-bytes", default=None, metavar="SIZE", help="burst: kevd's journal retention")
    p.add_argument("--quiet", type=float, default=2.0, help="burst: stop a consumer quiet this long (default 2 s)")
    p.add_argument("--timeout", type=float, default=600.0, help="burst: limit per consumer, seconds (default 600)")
    p.add_argument("--ready-timeout", type=float, default=300.0, help="wait this long for ready (default 300 s)")
    p.add_argument("--no-json", dest="json", action="store_false", help="do not write bench/results/*.json")
    args = p.parse_args(argv)
    args.consumers = [c.strip() for c in args.consumers.split(",") if c.strip()]
    for c in args.consumers:
        if c not in ("kevd", "kevd-inotify", "fsnotifywait", "inotifywait"):
            p.error(f"unknown consumer {c!r} (kevd, kevd-inotify, fsnotifywait, inotifywait)")
    args.kevd_state_parent = Path(args.kevd_state_dir)
    args.assume_ready_after = None
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("bench/run fanotify: needs root (fanotify, drop_caches, a tmpfs for the burst)")
    for tool in ("inotifywait", "fsnotifywait"):
        if not shutil.which(tool):
            sys.exit(f"bench/run fanotify: {tool} not found (apt-get install inotify-tools, 3.22 or later)")
    ok, why = kb.kevd_usable(args.kevd)
    if not ok:
        sys.exit(why)
    started = _dt.datetime.now()
    work = Path(tempfile.mkdtemp(prefix="kevd-fanotify-bench-", dir="/var/tmp"))
    startup: list[dict] = []
    burst: list[kb.Row] = []
    try:
        if args.only in (None, "startup"):
            startup = bench_startup(args)
        if args.only in (None, "burst"):
            gen = kb.compile_generator(work)
            burst = bench_burst(args, gen, work)
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    finally:
        kb.cleanup_children()
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(f"fanotify benchmark  {started:%Y-%m-%d %H:%M}  kernel {os.uname().release}, {os.cpu_count()} CPUs, "
          f"fanotify max_queued_events {sysctl('fs.fanotify.max_queued_events')}, "
          f"inotify max_queued_events {sysctl('fs.inotify.max_queued_events')}, load {os.getloadavg()[0]:.1f}")
    if startup:
        print()
        print_startup(startup)
    if burst:
        print()
        kb.print_table(burst, markdown=True)
    if args.json:
        outdir = BENCH_DIR / "results"
        outdir.mkdir(exist_ok=True)
        out = outdir / f"fanotify-{started:%Y%m%d-%H%M%S}.json"
        out.write_text(json.dumps({"started": started.isoformat(timespec="seconds"), "argv": argv,
                                   "startup": startup,
                                   "burst": [dict(asdict(r), captured_pct=r.captured_pct) for r in burst]},
                                  indent=2) + "\n")
        print(f"\nJSON: {out.relative_to(REPO_DIR) if out.is_relative_to(REPO_DIR) else out}")
    return 0


if __name__ == "__main__":
    def _stop(signum, frame):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    sys.exit(main(sys.argv[1:]))
