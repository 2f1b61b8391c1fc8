"""What the Python benchmark harnesses share (kevd_bench.py, crawl_bench.py): where kevd is, its config
header, sysctls, file-system types, sizes with k/m suffixes. Standard library only."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
# What `bench/run` builds: the bench package's release kevd, in its own scratch directory.
DEFAULT_KEVD = str(REPO_DIR / ".build-bench" / "release" / "kevd")


def log(prefix: str, msg: str) -> None:
    print(f"[{prefix}] {msg}", file=sys.stderr, flush=True)


def toml_str(s: str) -> str:
    return json.dumps(s)  # a JSON string is a valid TOML basic string


def kevd_daemon_config(state_dir: str, socket: str) -> str:
    """The `[daemon]` table every benchmark's kevd gets: its state dir and socket, and warnings only."""
    return ("[daemon]\n"
            f"state_dir = {toml_str(state_dir)}\n"
            f"socket = {toml_str(socket)}\n"
            'log_level = "warning"\n')


def sysctl(name: str, value=None) -> str:
    """The sysctl's value (`fs.inotify.max_queued_events`); with `value`, sets it and returns the old one."""
    path = Path("/proc/sys/" + name.replace(".", "/"))
    old = path.read_text().strip()
    if value is not None:
        path.write_text(f"{value}\n")
    return old


def fs_type(path: Path) -> str:
    """The type of the longest mount point in /proc/mounts that holds `path` (tmpfs, ext4, …)."""
    best, fstype = "", "?"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            mnt = parts[1].replace("\\040", " ")
            if (str(path) == mnt or str(path).startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                best, fstype = mnt, parts[2]
    except OSError:
        pass
    return fstype


def parse_count(s: str) -> int:
    """A positive count, with an optional k or m suffix and _ or , separators: `100k`, `1m`, `20_000`."""
    s = s.strip().lower().replace("_", "").replace(",", "")
    mult = 1
    if s.endswith("k"):
        mult, s = 1000, s[:-1]
    elif s.endswith("m"):
        mult, s = 1000000, s[:-1]
    v = int(float(s) * mult)
    if v <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return v
