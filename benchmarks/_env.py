"""What a benchmark result was measured on: machine, load, versions, commit, memory.

Timings mean little without the machine they came from, so every results file carries
`machine_info()`. On a shared machine the load average matters as much as the CPU
model: `LoadSampler` records it through a run (start, end, max, mean).
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata as _md
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("qsp", "jax", "jaxlib", "diffrax", "equinox", "optimistix", "lineax", "numpy", "scipy")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def load_average() -> list[float]:
    """1-, 5- and 15-minute load averages (runnable processes, all users)."""
    return [round(x, 2) for x in os.getloadavg()]


def machine_info() -> dict:
    """CPU, cores, RAM, OS, Python, package versions, git commit and JAX backend."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = _md.version(name)
        except _md.PackageNotFoundError:
            versions[name] = None
    info = {
        "time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "ram_gib": _ram_gib(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "packages": versions,
        "git_commit": _git("rev-parse", "HEAD"),
        # Uncommitted changes anywhere in the tree (other people's work included).
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
    }
    try:
        import jax

        info["jax_backend"] = jax.default_backend()
        info["jax_devices"] = [str(d) for d in jax.devices()]
        info["jax_x64"] = bool(jax.config.jax_enable_x64)
        info["jax_compilation_cache_dir"] = jax.config.jax_compilation_cache_dir
    except Exception as e:  # the record must not fail because JAX is misconfigured
        info["jax_backend"] = f"unavailable: {e}"
    return info


class LoadSampler:
    """Samples the 1-minute load average every `every` seconds in a daemon thread."""

    def __init__(self, every: float = 10.0):
        self.every = every
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(self.every)

    def start(self) -> "LoadSampler":
        self.start_load = load_average()
        self._thread.start()
        return self

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join(timeout=1.0)
        return self.summary()

    def summary(self) -> dict:
        s = list(self.samples) or [os.getloadavg()[0]]
        return {
            "start": self.start_load,
            "end": load_average(),
            "max_1min": round(max(s), 2),
            "mean_1min": round(sum(s) / len(s), 2),
            "n_samples": len(s),
        }


# -- memory ---------------------------------------------------------------------------------


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


class PeakMemory:
    """Peak resident memory of this process during a block, in MiB.

    On Linux the high-water mark (VmHWM, which `getrusage` reports as ru_maxrss) is
    reset on entry by writing 5 to /proc/self/clear_refs, so the peak is that of the
    block alone. Elsewhere it falls back to `resource.getrusage` (the process-wide peak
    since start; `reset` is then False and the number is an upper bound)."""

    def __enter__(self):
        self.reset = False
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.reset = True
        except OSError:
            pass
        self.rss_before_mib = (_status_kib("VmRSS") or 0) / 1024
        return self

    def __exit__(self, *exc):
        hwm = _status_kib("VmHWM") if self.reset else None
        if hwm is None:  # ru_maxrss is in KiB on Linux
            hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.peak_mib = hwm / 1024
        self.increase_mib = max(self.peak_mib - self.rss_before_mib, 0.0)
        return False


def cpu_seconds() -> float:
    """User + system CPU time of this process (all threads)."""
    t = os.times()
    return t.user + t.system


def timer() -> float:
    return time.perf_counter()
