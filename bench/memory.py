"""Memory of gunicorn workers, read from /proc (Linux)."""

from __future__ import annotations

from pathlib import Path

PROC = Path("/proc")


def worker_pids(master_pid: int) -> list[int]:
    """The pids of the live children of a gunicorn master (its workers)."""
    pids = []
    for stat in PROC.glob("[0-9]*/stat"):
        try:
            # The command name (2nd field) may hold spaces; the parent pid follows its ')'.
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended while we looked
        if int(fields[1]) == master_pid:
            pids.append(int(stat.parent.name))
    return sorted(pids)


def status_mb(pid: int, key: str) -> float:
    """A kB field of /proc/<pid>/status in MB (VmHWM: peak resident set; VmRSS: current)."""
    for line in (PROC / str(pid) / "status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(f"/proc/{pid}/status has no {key} line")


def peak_worker_rss_mb(master_pid: int) -> float:
    """The largest peak RSS (VmHWM) of the master's workers, in MB."""
    pids = worker_pids(master_pid)
    if not pids:
        raise RuntimeError(f"gunicorn master {master_pid} has no workers")
    return max(status_mb(pid, "VmHWM") for pid in pids)
