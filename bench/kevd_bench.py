#!/usr/bin/env python3
"""kevd benchmark harness: inotify and udev throughput, kevd vs. the stock tools.

Run it through bench/run (see bench/README.md).  It never asserts timings: it
prints a table, writes JSON to bench/results/ and exits 0 (2 on bad usage).

Part 1 (inotify): a C generator creates, writes 4 bytes to, closes and deletes
N files in a watched directory (4 events per file).  Consumers, one after the
other on the same workload:  inotifywait -m -r, and  kevd --config C --stdout.

Part 2 (udev, root only): in a private network namespace, N writes of an
action to /sys/class/net/lo/uevent, each one a synthetic kernel uevent seen
only in that namespace.  Consumers:  udevadm monitor --kernel, and kevd with
[udev] source = "kernel".

For every run the harness drains the consumer's stdout from a pipe (1 MiB pipe
buffer, 1 MiB reads, one reader thread), counts the events by line, stops when
the count reaches the expected one or the stream has been quiet for
--quiet seconds after the generator finished, then reads the consumer's CPU
time from /proc/PID/stat and sends SIGTERM.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import fcntl
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, asdict
from pathlib import Path
from typing import Callable, Optional

from benchlib import BENCH_DIR, DEFAULT_KEVD, REPO_DIR, fs_type, kevd_daemon_config, parse_count, sysctl, toml_str
from benchlib import log as _log

GEN_SOURCE = BENCH_DIR / "kevd_gen.c"
INOTIFY_TYPES = ("create", "modify", "close_write", "delete")
F_SETPIPE_SZ = 1031
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Every process we started, so that an interrupt can end them (by pid), and
# the process groups we created for consumers (by their leader's pid).
_children: list[subprocess.Popen] = []
_groups: list[int] = []


def kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def log(msg: str) -> None:
    _log("bench", msg)


# --------------------------------------------------------------------------
# A consumer process whose stdout goes through a pipe straight into the C
# counter (`kevd_gen count KIND ...`, see kevd_gen.c), which classifies the
# lines and reports its counts every 20 ms on its own stdout; one thread here
# reads those reports.  Counting in C keeps the harness's share of the two
# cores small.  How lines are counted:
#   inotifywait   event: starts with CREATE/MODIFY/CLOSE_WRITE/DELETE then ' ' or ',';
#                 overflow: contains Q_OVERFLOW
#   udevadm       event: starts with KERNEL[
#   kevd-inotify  event: "source":"inotify" and "type" one of the 4 types;
#                 overflow: "type":"overflow" (any source); "source":"kevd"
#                 started/stopping lines are counted apart
#   kevd-udev     the same with "source":"udev" (any type)
# --------------------------------------------------------------------------

REPORT_FIELDS = ("lines", "captured", "overflows", "other", "bytes", "t_first", "t_last", "t_data",
                 "create", "modify", "close_write", "delete", "started", "stopping", "other_kevd", "banner",
                 "unterminated", "t_stall_max", "stalls")


class Consumer:
    def __init__(self, argv: list[str], kind: str, gen: Path, tmp: Path,
                 ready: Callable[["Consumer"], bool], raw_path: Optional[Path] = None,
                 ready_on_stderr: bool = False) -> None:
        self.argv = argv
        self.kind = kind
        self.gen = gen
        self.head_path = tmp / f"{kind}.head"
        self.raw_path = raw_path
        self.ready_fn = ready
        self.ready_on_stderr = ready_on_stderr
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.eof = threading.Event()
        self.counts: dict = {f: 0 for f in REPORT_FIELDS}
        self.stderr_buf = bytearray()
        self.proc: Optional[subprocess.Popen] = None
        self.counter: Optional[subprocess.Popen] = None
        self.counter_cpu_s: Optional[float] = None

    def start(self) -> None:
        # Its own process group, so that stopping it also ends any helper it
        # started (which would otherwise keep the pipe open).
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, bufsize=0, close_fds=True, start_new_session=True)
        _children.append(self.proc)
        _groups.append(self.proc.pid)
        try:
            fcntl.fcntl(self.proc.stdout.fileno(), F_SETPIPE_SZ, 1 << 20)
        except OSError:
            pass
        self.counter = subprocess.Popen(
            [str(self.gen), "count", self.kind, str(self.head_path), str(self.raw_path or "-")],
            stdin=self.proc.stdout, stdout=subprocess.PIPE, stderr=None, bufsize=0, close_fds=True)
        _children.append(self.counter)
        self.proc.stdout.close()   # the counter holds the read end now
        threading.Thread(target=self._read_reports, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_reports(self) -> None:
        for line in self.counter.stdout:
            parts = line.split()
            if len(parts) != len(REPORT_FIELDS) + 1:
                continue
            vals = {}
            for f, v in zip(REPORT_FIELDS, parts[1:]):
                vals[f] = float(v) if f.startswith("t_") else int(v)
            with self.lock:
                self.counts = vals
            if not self.ready.is_set() and not self.ready_on_stderr and self.ready_fn(self):
                self.ready.set()
        self.eof.set()

    def _read_stderr(self) -> None:
        fd = self.proc.stderr.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            with self.lock:
                if len(self.stderr_buf) < 1 << 20:
                    self.stderr_buf += chunk
            if not self.ready.is_set() and self.ready_on_stderr and self.ready_fn(self):
                self.ready.set()

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready.wait(0.05):
                return True
            if self.proc.poll() is not None:
                self.eof.wait(1.0)   # let the counter see the last output
                return self.ready.is_set()
        return False

    def snapshot(self) -> dict:
        with self.lock:
            return dict(self.counts)

    def head(self, n: int = 600) -> str:
        try:
            return self.head_path.read_bytes()[:n].decode(errors="replace")
        except OSError:
            return ""

    def cpu_seconds(self) -> Optional[float]:
        """utime+stime of the consumer (all its threads) from /proc/PID/stat."""
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                s = f.read()
        except OSError:
            return None
        fields = s[s.rfind(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def comm(self) -> str:
        try:
            return Path(f"/proc/{self.proc.pid}/comm").read_text().strip()
        except OSError:
            return "?"

    def stop(self, timeout: float = 10.0) -> dict:
        """SIGTERM, wait (then SIGKILL); returns exit status and rusage CPU; waits for the counter's last report."""
        out: dict = {}
        p = self.proc
        t_stop = time.monotonic()
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        status = None
        ru = None
        while time.monotonic() < deadline:
            try:
                pid, st, r = os.wait4(p.pid, os.WNOHANG)
            except ChildProcessError:
                break
            if pid:
                status, ru = st, r
                break
            time.sleep(0.02)
        else:
            out["killed"] = True
            try:
                p.kill()
            except ProcessLookupError:
                pass
            try:
                pid, status, ru = os.wait4(p.pid, 0)
            except ChildProcessError:
                pass
        if status is not None:
            p.returncode = os.waitstatus_to_exitcode(status)
        # Anything the consumer left behind in its group goes too.
        kill_group(p.pid, signal.SIGKILL)
        if p.pid in _groups:
            _groups.remove(p.pid)
        out["exit_code"] = p.returncode
        out["stop_s"] = round(time.monotonic() - t_stop, 3)
        if ru is not None:
            out["rusage_cpu_s"] = round(ru.ru_utime + ru.ru_stime, 4)
            out["max_rss_kib"] = ru.ru_maxrss
        # The counter ends at EOF (when every holder of the pipe's write end is gone).
        if not self.eof.wait(10.0) and self.counter.poll() is None:
            self.counter.kill()
            out["counter_killed"] = True
        try:
            _, _, cru = os.wait4(self.counter.pid, 0)
            self.counter_cpu_s = round(cru.ru_utime + cru.ru_stime, 3)
            out["counter_cpu_s"] = self.counter_cpu_s
        except ChildProcessError:
            pass
        self.eof.wait(2.0)
        for q in (p, self.counter):
            if q in _children:
                _children.remove(q)
        return out

    def stderr_tail(self, n: int = 1500) -> str:
        with self.lock:
            return self.stderr_buf[-n:].decode(errors="replace")


# --------------------------------------------------------------------------

@dataclass
class Row:
    part: str
    consumer: str
    n: int
    generated: int
    captured: Optional[int] = None
    overflows: Optional[int] = None
    wall_s: Optional[float] = None
    events_per_s: Optional[float] = None
    cpu_s: Optional[float] = None
    cpu_s_per_m: Optional[float] = None
    gen_s: Optional[float] = None
    gen_events_per_s: Optional[float] = None
    # The longest a 1 ms sleep overslept during the run (the counter's stall probe, kevd_gen.c): a CPU that
    # stalls longer than the kernel queue lasts overflows any consumer.
    stall_ms: Optional[float] = None
    status: str = "ok"
    notes: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)

    @property
    def captured_pct(self) -> Optional[float]:
        if self.captured is None or not self.generated:
            return None
        return 100.0 * self.captured / self.generated


def compile_generator(tmp: Path) -> Path:
    exe = tmp / "kevd_gen"
    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc:
        raise SystemExit("bench: gcc (or cc) is needed to build the generator: apt-get install gcc")
    subprocess.run([cc, "-O2", "-Wall", "-pthread", "-o", str(exe), str(GEN_SOURCE)], check=True)
    return exe


def run_generator(argv: list[str]) -> tuple[Optional[float], str]:
    """Runs a generator to completion; returns (its own loop seconds, error text)."""
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    _children.append(p)
    out, err = p.communicate()
    _children.remove(p)
    parts = out.decode().split()
    if p.returncode != 0 or len(parts) != 3 or parts[0] != "ok":
        return None, (err.decode(errors="replace") + out.decode(errors="replace")).strip() or f"exit {p.returncode}"
    return float(parts[2]), ""


def measure(consumer: Consumer, row: Row, gen_argv: list[str], expected: int, args, ready_timeout: float) -> Row:
    """The common measurement: start consumer, wait ready, generate, drain, stop."""
    consumer.start()
    t_spawn = time.monotonic()
    assume = getattr(args, "assume_ready_after", None)
    if assume and not consumer.wait_ready(assume) and consumer.proc.poll() is None:
        # Work-around switch for a consumer that does not flush its ready
        # line: go on after `assume` seconds and say so.
        row.notes.append(f"no ready line within {assume:g}s: assumed ready (--assume-ready-after)")
        consumer.ready.set()
    if not consumer.wait_ready(ready_timeout):
        row.status = "failed: not ready"
        stop = consumer.stop()
        row.notes.append(f"consumer not ready within {ready_timeout:.0f}s (exit {stop.get('exit_code')})")
        first = consumer.head(400).strip()
        if first:
            row.notes.append("stdout: " + first)
        tail = consumer.stderr_tail(600).strip()
        if tail:
            row.notes.append("stderr: " + tail)
        return row
    row.details["ready_after_s"] = round(time.monotonic() - t_spawn, 3)
    row.details["process"] = consumer.comm()
    cpu0 = consumer.cpu_seconds()
    base_captured = consumer.snapshot()["captured"]   # should be 0
    if base_captured:
        row.notes.append(f"{base_captured} events before the generator started")

    # The generator runs in its own thread so the main thread can watch.
    gen_result: dict = {}

    def gen() -> None:
        gen_result["t_start"] = time.monotonic()
        gen_result["loop_s"], gen_result["err"] = run_generator(gen_argv)
        gen_result["t_end"] = time.monotonic()

    gt = threading.Thread(target=gen, daemon=True)
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    gt.start()
    deadline = t0 + args.timeout
    reason = "timeout"
    # "Quiet" means no output AND no CPU use: a consumer that is still busy
    # (e.g. batching events before it writes them) is waited for.
    cpu_sample_t, cpu_sample = t0, cpu0
    last_busy = t0
    while True:
        time.sleep(0.02)
        snap = consumer.snapshot()
        now = time.monotonic()
        if snap["captured"] - base_captured >= expected:
            reason = "complete"
            break
        if consumer.proc.poll() is not None:
            reason = "consumer exited"
            break
        if now - cpu_sample_t >= 0.25:
            c = consumer.cpu_seconds()
            if c is not None and cpu_sample is not None and c - cpu_sample > 0.05 * (now - cpu_sample_t):
                last_busy = now
            cpu_sample_t, cpu_sample = now, c
        if not gt.is_alive() and now - max(snap["t_data"], last_busy, gen_result.get("t_end", now)) >= args.quiet:
            reason = "quiet"
            break
        if now > deadline:
            break
    gt.join()
    cpu1 = consumer.cpu_seconds()
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    # The harness's own CPU (and the counter's, below) competes for the same cores.
    row.details["harness_cpu_s"] = round(ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime, 3)
    snap = consumer.snapshot()
    stop = consumer.stop()
    final = consumer.snapshot()

    if gen_result.get("err"):
        row.notes.append("generator failed: " + gen_result["err"][:300])
        row.status = "failed: generator"
    row.gen_s = gen_result.get("loop_s")
    if row.gen_s:
        row.gen_events_per_s = row.generated / row.gen_s
    captured = snap["captured"] - base_captured
    row.captured = final["captured"] - base_captured
    row.overflows = final["overflows"]
    if row.captured != captured:
        row.notes.append(f"{row.captured - captured} events arrived after SIGTERM (backlog or buffered output)")
    last = snap["t_last"] or t0
    row.wall_s = max(last - t0, 1e-9)
    row.events_per_s = captured / row.wall_s if captured else 0.0
    if cpu0 is not None and cpu1 is not None:
        row.cpu_s = cpu1 - cpu0
        if captured:
            row.cpu_s_per_m = row.cpu_s / captured * 1e6
    row.details.update(stop)
    row.details["end_reason"] = reason
    if final["t_first"]:
        # Latency hint: a consumer that batches shows a late first event.
        row.details["first_event_s"] = round(final["t_first"] - t0, 3)
    if gen_result.get("t_end"):
        row.details["generator_wall_s"] = round(gen_result["t_end"] - t0, 3)
    row.details["lines"] = final["lines"]
    row.details["other_lines"] = final["other"]
    if any(final[t] for t in INOTIFY_TYPES):
        row.details["per_type"] = {t: final[t] for t in INOTIFY_TYPES}
    markers = {m: final[m] for m in ("started", "stopping", "other_kevd", "unterminated") if final[m]}
    if markers:
        row.details["markers"] = markers
    if final["unterminated"]:
        row.notes.append("the output ended in the middle of a line")
    row.details["bytes"] = final["bytes"]
    row.stall_ms = final["t_stall_max"] * 1000
    row.details["stalls_10ms"] = final["stalls"]
    if reason == "timeout":
        row.notes.append(f"stopped by --timeout {args.timeout}s")
    if reason == "consumer exited":
        row.notes.append(f"consumer exited by itself (code {consumer.proc.returncode})")
        if row.status == "ok":
            row.status = "failed: consumer exited"
    tail = consumer.stderr_tail(800).strip()
    if tail:
        row.details["stderr_tail"] = tail
    return row


# --------------------------------------------------------------------------
# kevd helpers
# --------------------------------------------------------------------------

def kevd_ready(c: Consumer) -> bool:
    return c.snapshot()["started"] > 0


def kevd_usable(path: str) -> tuple[bool, str]:
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        return False, f"kevd binary not found: {path} (build it, or pass --kevd PATH)"
    try:
        r = subprocess.run([path, "--help"], capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"{path} --help failed: {e}"
    if r.returncode != 0:
        return False, f"{path} --help exited {r.returncode}"
    return True, ""


def write_kevd_config(tmp: Path, body: str, args: argparse.Namespace) -> Path:
    state = tmp / "state"
    if args.kevd_state_parent is None:
        state.mkdir(exist_ok=True)
    else:
        # Elsewhere (by default on disk, like an installed kevd's /var/lib/kevd); `remove_work_dir` deletes it.
        state.symlink_to(tempfile.mkdtemp(prefix="kevd-state-", dir=args.kevd_state_parent))
    conf = tmp / "kevd.toml"
    journal = (f"\n[journal]\nmax_bytes = {toml_str(args.kevd_journal_max_bytes)}\n"
               if args.kevd_journal_max_bytes else "")
    conf.write_text(kevd_daemon_config(str(state), str(state / "kevd.sock")) + body + journal)
    return conf


def remove_work_dir(tmp: Path) -> None:
    """Deletes a consumer's temp dir, and kevd's state dir if it was put elsewhere."""
    state = tmp / "state"
    if state.is_symlink():
        shutil.rmtree(os.readlink(state), ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)


def validate_kevd_stream(raw: Path, source: str, types: Optional[tuple[str, ...]], expected_per_type: Optional[int]) -> list[str]:
    """Full JSON check of a saved kevd stream (only with --validate)."""
    problems: list[str] = []

    def problem(msg: str) -> None:
        if len(problems) < 25:
            problems.append(msg)

    last_seq = None
    per_type: dict[str, int] = {}
    # The inotify workload names files f0, f1, ... in order and does create,
    # modify, close_write, delete for each, so the stream is a fixed sequence
    # and a jump in it is lost events.  The kernel queues IN_Q_OVERFLOW when
    # it first drops, but while that record is still unread later drops add
    # no new one, so one overflow line can stand for many later gaps.  What
    # must never happen is a gap with no overflow line anywhere before it.
    order = {t: k for k, t in enumerate(INOTIFY_TYPES)}
    last_pos = -1
    overflow_seen = False
    gaps = silent_gaps = silent_lost = 0
    kevd_overflows: list[str] = []
    stdout_lost = 0   # lines kevd's stdout sink dropped for a slow reader (reported after the fact)
    silent_examples: list[str] = []
    keys_seen: set = set()
    n = 0
    first = last = None
    with open(raw, "rb") as f:
        for i, line in enumerate(f, 1):
            n += 1
            try:
                obj = json.loads(line)
            except ValueError as e:
                problem(f"line {i}: not JSON ({e}): {line[:120]!r}")
                continue
            if not isinstance(obj, dict):
                problem(f"line {i}: not an object")
                continue
            if first is None:
                first = obj
            last = obj
            keys_seen.add(tuple(sorted(obj.keys())))
            for k in ("seq", "id", "time", "mono", "source", "type"):
                if k not in obj:
                    problem(f"line {i}: missing key {k!r}: {line[:160]!r}")
            seq = obj.get("seq")
            if isinstance(seq, int):
                if last_seq is not None and seq <= last_seq:
                    problem(f"line {i}: seq {seq} not above previous {last_seq}")
                last_seq = seq
            if obj.get("source") == "kevd" and obj.get("type") == "overflow":
                d = obj.get("data") if isinstance(obj.get("data"), dict) else {}
                kevd_overflows.append(f"{obj.get('key')}: lost {d.get('lost', '?')}")
                if obj.get("key") == "stdout" and isinstance(d.get("lost"), int):
                    stdout_lost += d["lost"]
            if obj.get("source") == source:
                t = obj.get("type")
                per_type[t] = per_type.get(t, 0) + 1
                d = obj.get("data")
                if source == "inotify" and t == "overflow":
                    overflow_seen = True
                if source == "inotify" and t in INOTIFY_TYPES:
                    if not isinstance(d, dict) or "path" not in d:
                        problem(f"line {i}: inotify event without data.path: {line[:160]!r}")
                        continue
                    if obj.get("key") != d.get("path"):
                        problem(f"line {i}: key != data.path: {line[:160]!r}")
                    name = str(d.get("name", ""))
                    if name[:1] == "f" and name[1:].isdigit():
                        pos = int(name[1:]) * 4 + order[t]
                        if pos != last_pos + 1:
                            gaps += 1
                            if pos <= last_pos:
                                problem(f"line {i}: {t} {name} out of order (after position {last_pos})")
                            elif not overflow_seen:
                                silent_gaps += 1
                                silent_lost += pos - last_pos - 1
                                if len(silent_examples) < 5:
                                    silent_examples.append(f"line {i}: {t} {name} follows "
                                                           f"f{last_pos // 4}/{INOTIFY_TYPES[last_pos % 4]}")
                        last_pos = max(last_pos, pos)
    if first is None or first.get("source") != "kevd" or first.get("type") != "started":
        problem(f"first line is not kevd/started: {first}")
    if last is None or last.get("source") != "kevd" or last.get("type") != "stopping":
        problem(f"last line is not kevd/stopping: {last}")
    # With overflows, fewer events than generated is expected (and counted in the table).
    if expected_per_type is not None and types and not per_type.get("overflow") and not kevd_overflows:
        for t in types:
            if per_type.get(t, 0) != expected_per_type:
                problem(f"{per_type.get(t, 0)} {source}/{t} events, expected {expected_per_type}")
    if kevd_overflows:
        problems.insert(0, f"kevd/overflow lines: {len(kevd_overflows)} ({'; '.join(kevd_overflows[:5])})")
    if source == "inotify":
        problems.insert(0, f"gaps in the event sequence: {gaps}; before any inotify overflow line: {silent_gaps} "
                           f"({silent_lost} events; kevd reported {stdout_lost} lines dropped from stdout)")
        if silent_lost > stdout_lost:
            for e in silent_examples:
                problem("unexplained gap at " + e)
    if len(keys_seen) > 3:
        problem(f"{len(keys_seen)} different key sets across lines")
    problems.insert(0, f"validated {n} lines; per type: {per_type}")
    return problems


def save_raw(args, raw: Optional[Path], stem: str) -> None:
    if args.save_output and raw and raw.exists():
        args.save_output.mkdir(parents=True, exist_ok=True)
        dest = args.save_output / f"{stem}.out"
        shutil.move(str(raw), dest)
        log(f"saved consumer stdout to {dest}")


# --------------------------------------------------------------------------
# Part 1: inotify
# --------------------------------------------------------------------------

def bench_inotify(args, gen: Path, base: Path) -> list[Row]:
    rows: list[Row] = []
    for n in args.sizes:
        for rep in range(args.repeat):
            if args.baseline:
                tmp = Path(tempfile.mkdtemp(prefix="inotify-none-", dir=base))
                (tmp / "watched").mkdir()
                row = Row("inotify", "(no watcher)", n, 4 * n)
                secs, err = run_generator([str(gen), "files", str(tmp / "watched"), str(n)])
                row.gen_s = secs
                if secs:
                    row.gen_events_per_s = 4 * n / secs
                else:
                    row.status = "failed: generator"
                    row.notes.append(err)
                shutil.rmtree(tmp, ignore_errors=True)
                rows.append(row)
                print_row_progress(row)
            for name in args.consumers:
                tmp = Path(tempfile.mkdtemp(prefix=f"inotify-{name}-", dir=base))
                watched = tmp / "watched"
                watched.mkdir()
                row = Row("inotify", name, n, 4 * n)
                raw = tmp / "stdout.raw" if (args.validate or args.save_output) else None
                if name == "inotifywait":
                    # -e q_overflow: without it inotifywait drops the overflow
                    # event silently when -e is given (it prints only events
                    # in the -e mask); with it, it prints "Q_OVERFLOW ".
                    if not shutil.which("inotifywait"):
                        row.status = "skipped"
                        row.notes.append("inotifywait not installed (apt-get install inotify-tools)")
                        rows.append(row)
                        continue
                    c = Consumer(["inotifywait", "-m", "-r", "-e", "create", "-e", "modify", "-e", "close_write",
                                  "-e", "delete", "-e", "q_overflow", "--format", "%e %w%f", str(watched)],
                                 "inotifywait", gen, tmp,
                                 lambda c: b"Watches established" in c.stderr_buf,
                                 raw, ready_on_stderr=True)
                else:
                    ok, why = kevd_usable(args.kevd)
                    if not ok:
                        row.status = "skipped"
                        row.notes.append(why)
                        rows.append(row)
                        print_row_progress(row)
                        continue
                    conf = write_kevd_config(tmp, (
                        "\n[[watch]]\n"
                        f"path = {toml_str(str(watched))}\n"
                        "recursive = true\n"
                        # The inotify source, as its row says (as root `auto` would be fanotify: bench/run fanotify).
                        'backend = "inotify"\n'
                        'events = ["create", "modify", "close_write", "delete"]\n'), args)
                    c = Consumer([args.kevd, "--config", str(conf), "--stdout"],
                                 "kevd-inotify", gen, tmp, kevd_ready, raw)
                row = measure(c, row, [str(gen), "files", str(watched), str(n)], 4 * n, args, args.ready_timeout)
                if args.validate and raw and name == "kevd" and row.status == "ok":
                    row.details["validation"] = validate_kevd_stream(raw, "inotify", INOTIFY_TYPES, n)
                save_raw(args, raw, f"inotify-{name}-{n}-{rep + 1}")
                remove_work_dir(tmp)
                rows.append(row)
                print_row_progress(row)
    return rows


# --------------------------------------------------------------------------
# Part 2: udev
# --------------------------------------------------------------------------

class Netns:
    def __init__(self, name: str) -> None:
        self.name = name
        self.created = False

    def __enter__(self) -> "Netns":
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        self.created = True
        return self

    def delete(self) -> None:
        if self.created:
            subprocess.run(["ip", "netns", "del", self.name], check=False)
            self.created = False

    def __exit__(self, *exc) -> None:
        self.delete()


_netns: Optional[Netns] = None


def bench_udev(args, gen: Path, base: Path) -> list[Row]:
    global _netns
    rows: list[Row] = []
    n = args.udev_count
    if os.geteuid() != 0:
        row = Row("udev", "-", n, n, status="skipped")
        row.notes.append("the udev part needs root (ip netns add, sysfs uevent writes); run bench/run as root")
        log("udev part SKIPPED: not root (it needs `ip netns add` and writes to sysfs)")
        return [row]
    if not shutil.which("ip"):
        return [Row("udev", "-", n, n, status="skipped", notes=["iproute2 (ip) not installed"])]
    ns_name = args.netns_name or f"kevd-bench-{os.getpid()}"
    with Netns(ns_name) as ns:
        _netns = ns
        nsexec = ["ip", "netns", "exec", ns.name]
        uevent = "/sys/class/net/lo/uevent"
        for rep in range(args.repeat):
            for name in args.udev_consumers:
                tmp = Path(tempfile.mkdtemp(prefix=f"udev-{name}-", dir=base))
                row = Row("udev", "udevadm monitor" if name == "udevadm" else name, n, n)
                raw = tmp / "stdout.raw" if (args.validate or args.save_output) else None
                if name == "udevadm":
                    if not shutil.which("udevadm"):
                        row.status = "skipped"
                        row.notes.append("udevadm not installed (apt-get install udev)")
                        rows.append(row)
                        continue
                    c = Consumer(nsexec + ["udevadm", "monitor", "--kernel"], "udevadm", gen, tmp,
                                 lambda c: c.snapshot()["banner"] > 0, raw)
                else:
                    ok, why = kevd_usable(args.kevd)
                    if not ok:
                        row.status = "skipped"
                        row.notes.append(why)
                        rows.append(row)
                        print_row_progress(row)
                        continue
                    conf = write_kevd_config(tmp, '\n[udev]\nenabled = true\nsource = "kernel"\n', args)
                    c = Consumer(nsexec + [args.kevd, "--config", str(conf), "--stdout"],
                                 "kevd-udev", gen, tmp, kevd_ready, raw)
                # udevadm prints its banner after it has bound its netlink
                # socket, so the banner is the readiness signal.
                row = measure(c, row, nsexec + [str(gen), "uevent", uevent, str(n), args.udev_action],
                              n, args, args.ready_timeout)
                if name == "udevadm":
                    row.overflows = None
                    row.notes.append("udevadm reports no overflow; lost = generated - captured")
                if args.validate and raw and name == "kevd" and row.status == "ok":
                    row.details["validation"] = validate_kevd_stream(raw, "udev", None, None)
                save_raw(args, raw, f"udev-{name}-{n}-{rep + 1}")
                remove_work_dir(tmp)
                rows.append(row)
                print_row_progress(row)
        _netns = None
    return rows


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------

def fmt_int(v) -> str:
    return "-" if v is None else f"{v:,}"


def fmt_f(v, digits=2) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


COLUMNS = ["part", "consumer", "N", "generated", "captured", "capt %", "overflows", "wall s", "events/s",
           "CPU s", "CPU s/M ev", "gen events/s", "max stall ms", "status"]


def row_cells(r: Row) -> list[str]:
    return [r.part, r.consumer, fmt_int(r.n), fmt_int(r.generated), fmt_int(r.captured),
            fmt_f(r.captured_pct, 1), fmt_int(r.overflows), fmt_f(r.wall_s, 2),
            fmt_int(None if r.events_per_s is None else round(r.events_per_s)),
            fmt_f(r.cpu_s, 2), fmt_f(r.cpu_s_per_m, 2),
            fmt_int(None if r.gen_events_per_s is None else round(r.gen_events_per_s)),
            fmt_f(r.stall_ms, 1), r.status]


def print_row_progress(r: Row) -> None:
    log(" | ".join(f"{c}={v}" for c, v in zip(COLUMNS, row_cells(r))))


def median_rows(rows: list[Row]) -> list[Row]:
    groups: dict[tuple, list[Row]] = {}
    for r in rows:
        groups.setdefault((r.part, r.consumer, r.n), []).append(r)
    out = []
    for (part, consumer, n), rs in groups.items():
        ok = [r for r in rs if r.status == "ok"]
        m = Row(part, consumer, n, rs[0].generated, status=f"{len(ok)}/{len(rs)} ok")

        def med(attr):
            vals = [getattr(r, attr) for r in ok if getattr(r, attr) is not None]
            return statistics.median(vals) if vals else None
        for attr in ("captured", "overflows", "wall_s", "events_per_s", "cpu_s", "cpu_s_per_m", "gen_s",
                     "gen_events_per_s", "stall_ms"):
            setattr(m, attr, med(attr))
        if m.captured is not None:
            m.captured = round(m.captured)
        if m.overflows is not None:
            m.overflows = round(m.overflows)
        out.append(m)
    return out


def print_table(rows: list[Row], markdown: bool, notes: bool = True) -> None:
    cells = [COLUMNS] + [row_cells(r) for r in rows]
    if markdown:
        print("| " + " | ".join(COLUMNS) + " |")
        print("|" + "|".join("---" for _ in COLUMNS) + "|")
        for c in cells[1:]:
            print("| " + " | ".join(c) + " |")
    else:
        widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
        for j, c in enumerate(cells):
            print("  ".join(v.rjust(widths[i]) if 2 <= i <= 12 else v.ljust(widths[i]) for i, v in enumerate(c)).rstrip())
            if j == 0:
                print("  ".join("-" * w for w in widths))
    # Identical notes (same part, consumer and text) are printed once, with the sizes they apply to.
    uniq: dict[tuple[str, str, str], list[int]] = {}
    for r in rows if notes else []:
        for n in r.notes:
            sizes = uniq.setdefault((r.part, r.consumer, n), [])
            if r.n not in sizes:
                sizes.append(r.n)
    if uniq:
        print()
        print("Notes:")
        for (part, consumer, n), sizes in uniq.items():
            print(f"  - {part}/{consumer} N={', '.join(f'{x:,}' for x in sizes)}: {n}")


def tool_version(argv: list[str]) -> str:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (r.stdout or r.stderr).strip().splitlines()[0]
    except Exception:
        return "?"


def machine_info(args, base: Path) -> dict:
    def read(p):
        try:
            return Path(p).read_text().strip()
        except OSError:
            return None
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "kernel": platform.release(), "cpus": os.cpu_count(), "cpu_model": cpu,
        "python": platform.python_version(),
        "work_dir": str(base), "work_fs": fs_type(base),
        "inotify_max_queued_events": read("/proc/sys/fs/inotify/max_queued_events"),
        "kevd_journal_max_bytes": args.kevd_journal_max_bytes,
        "kevd_state_dir": str(args.kevd_state_parent) if args.kevd_state_parent else str(base),
        "kevd_state_fs": fs_type(args.kevd_state_parent or base),
        "inotifywait": tool_version(["inotifywait", "--help"]) if shutil.which("inotifywait") else None,
        "udevadm": tool_version(["udevadm", "--version"]) if shutil.which("udevadm") else None,
        "kevd": args.kevd,
    }
    if os.path.isfile(args.kevd):
        st = os.stat(args.kevd)
        info["kevd_mtime"] = _dt.datetime.fromtimestamp(st.st_mtime).isoformat(timespec="seconds")
        info["kevd_size"] = st.st_size
    try:
        info["git_head"] = subprocess.run(["git", "-C", str(REPO_DIR), "rev-parse", "--short", "HEAD"],
                                          capture_output=True, text=True, timeout=10).stdout.strip() or None
    except Exception:
        pass
    return info


# --------------------------------------------------------------------------

def parse_args(argv: list[str]):
    p = argparse.ArgumentParser(prog="bench/run inotify", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kevd", default=DEFAULT_KEVD, help=f"kevd binary (default {DEFAULT_KEVD})")
    p.add_argument("--sizes", default="100k,1m",
                   help="inotify workload sizes N (files; 4 events each), comma separated, k/m suffixes (default 100k,1m)")
    p.add_argument("--quick", action="store_true", help="smoke run: N = 20,000 files (overrides --sizes)")
    p.add_argument("--udev-count", type=parse_count, default=20000, help="uevents to write (default 20000)")
    p.add_argument("--udev-action", default="add", choices=["add", "change"], help="action written to uevent (default add)")
    p.add_argument("--only", choices=["inotify", "udev"], help="run only one part")
    p.add_argument("--consumers", default="inotifywait,kevd",
                   help="consumers, comma separated, run in this order (default inotifywait,kevd); "
                        "in the udev part inotifywait means udevadm")
    p.add_argument("--repeat", type=int, default=1, help="repeat each measurement K times (default 1)")
    p.add_argument("--no-baseline", dest="baseline", action="store_false",
                   help="skip the generator-only run (no watcher) before each inotify size")
    p.add_argument("--dir", type=Path, default=None,
                   help="where the temp dirs (watched folder, kevd state) go (default: /dev/shm if tmpfs, else /tmp)")
    p.add_argument("--kevd-state-dir", default="/var/tmp", metavar="DIR",
                   help="where kevd's state (its journal) goes, in a temp dir per run (default /var/tmp, on disk "
                        "as an installed kevd's /var/lib/kevd is; 'work': next to the watched folder, in --dir)")
    p.add_argument("--kevd-journal-max-bytes", default=None, metavar="SIZE",
                   help='journal retention for kevd, e.g. "256M" (default: kevd\'s, no limit): old segments are '
                        "deleted as new ones fill, so the journal reuses memory instead of growing")
    p.add_argument("--max-queued-events", type=int, default=None,
                   help="set fs.inotify.max_queued_events for the run (root; restored at the end)")
    p.add_argument("--quiet", type=float, default=2.0,
                   help="stop a consumer once it has printed nothing and used no CPU for this long after the generator "
                        "ended (default 2)")
    p.add_argument("--timeout", type=float, default=900.0, help="hard limit per measurement, seconds (default 900)")
    p.add_argument("--ready-timeout", type=float, default=30.0, help="wait this long for a consumer to be ready (default 30)")
    p.add_argument("--assume-ready-after", type=float, default=None, metavar="S",
                   help="if a consumer has printed no ready line after S seconds but runs, start the generator anyway "
                        "(work-around for a kevd that does not flush its started line; noted in the results)")
    p.add_argument("--validate", action="store_true",
                   help="also save kevd's stdout and check every line (JSON, seq order, counts per type) after the run")
    p.add_argument("--save-output", type=Path, default=None, metavar="DIR",
                   help="keep each consumer's raw stdout in DIR (for inspection)")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    p.add_argument("--no-json", dest="json", action="store_false", help="do not write bench/results/*.json")
    p.add_argument("--netns-name", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    try:
        args.sizes = [parse_count(s) for s in args.sizes.split(",") if s.strip()]
    except (ValueError, argparse.ArgumentTypeError):
        p.error(f"bad --sizes {args.sizes!r}")
    if args.quick:
        args.sizes = [20000]
    cons = [c.strip() for c in args.consumers.split(",") if c.strip()]
    for c in cons:
        if c not in ("inotifywait", "udevadm", "kevd"):
            p.error(f"unknown consumer {c!r} (inotifywait, udevadm, kevd)")
    args.consumers = [("inotifywait" if c == "udevadm" else c) for c in cons]
    args.udev_consumers = [("udevadm" if c == "inotifywait" else c) for c in args.consumers]
    if args.repeat < 1:
        p.error("--repeat must be >= 1")
    if args.kevd_state_dir == "work":
        args.kevd_state_parent = None
    else:
        args.kevd_state_parent = Path(args.kevd_state_dir)
        if not (args.kevd_state_parent.is_dir() and os.access(args.kevd_state_parent, os.W_OK)):
            p.error(f"--kevd-state-dir {args.kevd_state_dir}: not a writable directory")
    return args


def default_base() -> Path:
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and fs_type(shm) == "tmpfs":
        return shm
    return Path(tempfile.gettempdir())


def cleanup_children() -> None:
    for g in list(_groups):
        kill_group(g, signal.SIGKILL)
    _groups.clear()
    for p in list(_children):
        if p.poll() is None:
            try:
                p.kill()
            except ProcessLookupError:
                pass
            try:
                p.wait(5)
            except Exception:
                pass
    _children.clear()


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    base_parent = args.dir or default_base()
    base_parent.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="kevd-bench-", dir=base_parent))
    old_q = None
    rows: list[Row] = []
    interrupted = False
    started = _dt.datetime.now()
    try:
        if args.max_queued_events:
            old_q = sysctl("fs.inotify.max_queued_events", args.max_queued_events)
        info = machine_info(args, base)
        log(f"work dir {base} ({info['work_fs']}), {info['cpus']} CPUs, kernel {info['kernel']}, "
            f"inotify max_queued_events {info['inotify_max_queued_events']}")
        gen = compile_generator(base)
        if args.only in (None, "inotify"):
            rows += bench_inotify(args, gen, base)
        if args.only in (None, "udev"):
            rows += bench_udev(args, gen, base)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted; cleaning up")
    finally:
        cleanup_children()
        if _netns is not None:
            _netns.delete()
        if old_q is not None:
            try:
                sysctl("fs.inotify.max_queued_events", old_q)
            except OSError:
                pass
        shutil.rmtree(base, ignore_errors=True)
    if interrupted:
        return 130

    print()
    print(f"kevd benchmark  {started:%Y-%m-%d %H:%M}  kernel {info['kernel']}, {info['cpus']} CPUs ({info['cpu_model']}), "
          f"work fs {info['work_fs']}, max_queued_events {info['inotify_max_queued_events']}"
          + f", kevd state on {info['kevd_state_fs']} ({info['kevd_state_dir']})"
          + (f", kevd journal max_bytes {args.kevd_journal_max_bytes}" if args.kevd_journal_max_bytes else ""))
    print()
    print_table(rows, args.markdown)
    if args.repeat > 1:
        print()
        print(f"Median of {args.repeat} runs (successful runs only):")
        print()
        print_table(median_rows(rows), args.markdown, notes=False)
    if args.validate:
        for r in rows:
            v = r.details.get("validation")
            if v:
                print(f"\nValidation {r.part}/{r.consumer} N={r.n:,}:")
                for line in v:
                    print(f"  {line}")
    if args.json:
        outdir = BENCH_DIR / "results"
        outdir.mkdir(exist_ok=True)
        out = outdir / f"bench-{started:%Y%m%d-%H%M%S}.json"
        doc = {"started": started.isoformat(timespec="seconds"), "argv": argv, "machine": info,
               "rows": [dict(asdict(r), captured_pct=r.captured_pct) for r in rows]}
        out.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"\nJSON: {out.relative_to(REPO_DIR) if out.is_relative_to(REPO_DIR) else out}")
    return 0


if __name__ == "__main__":
    def _stop(signum, frame):
        # First INT/TERM interrupts the run; later ones (a Ctrl-C reaches us
        # and bench/run may forward it) must not interrupt the cleanup.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt
    # bench/run starts us in the background, where SIGINT starts ignored.
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    sys.exit(main(sys.argv[1:]))
