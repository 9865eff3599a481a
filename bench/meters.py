"""Honest throughput and memory meters.

Step times are taken between step boundaries with CUDA events on a GPU (recorded without a host
sync, read once at the end) or `perf_counter` on a CPU; the first `warmup` steps are excluded.
Peak memory is CUDA max allocated/reserved since the cell's reset, or on a CPU the peak resident
set size of this process over the cell, sampled by a background thread.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
import torch


class StepTimer:
    """Per-step wall times: `start()` before the first step, `mark(n)` after each, `resume()` after untimed work.

    `clock` (CPU only; seconds, monotonic) defaults to `time.perf_counter`; tests pass a fake clock.
    """

    def __init__(self, device: torch.device, warmup: int, clock=time.perf_counter):
        self.cuda = device.type == "cuda"
        self.clock = clock
        self.warmup = max(0, warmup)
        self.intervals: list = []
        self.samples: list[int] = []
        self._open = None

    def _now(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return self.clock()

    def start(self) -> None:
        """Open the first interval (call right before the first step)."""
        self.intervals = []
        self.samples = []
        self._open = self._now()

    def mark(self, samples: int, timed: bool = True) -> None:
        """Close the current step's interval and open the next one at the same instant.

        `timed=False` keeps the interval out of the summary (e.g. the first batch of an evaluation,
        which pays for starting loader workers).
        """
        end = self._now()
        self.intervals.append((self._open, end))
        self.samples.append(samples if timed else -1)
        self._open = end

    def resume(self) -> None:
        """Re-open the interval after untimed work (evaluation) so it is not counted."""
        self._open = self._now()

    def step_seconds(self) -> list[float]:
        if self.cuda:
            torch.cuda.synchronize()
            return [a.elapsed_time(b) / 1000.0 for a, b in self.intervals]
        return [b - a for a, b in self.intervals]

    def summary(self, prefix: str) -> dict[str, float | int | None]:
        """`{prefix}_samples_per_sec`, step-time median/p90 (ms) over the timed steps, count."""
        kept = [(t, n) for t, n in zip(self.step_seconds()[self.warmup :], self.samples[self.warmup :]) if n >= 0]
        times = [t for t, _ in kept]
        samples = [n for _, n in kept]
        if not times or sum(times) <= 0:
            return {f"{prefix}_samples_per_sec": None, f"{prefix}_step_ms_median": None,
                    f"{prefix}_step_ms_p90": None, f"{prefix}_timed_steps": 0}
        return {
            f"{prefix}_samples_per_sec": sum(samples) / sum(times),
            f"{prefix}_step_ms_median": float(np.median(times)) * 1000.0,
            f"{prefix}_step_ms_p90": float(np.percentile(times, 90)) * 1000.0,
            f"{prefix}_timed_steps": len(times),
        }


@dataclass
class MemoryPeak:
    allocated_mb: float | None
    reserved_mb: float | None
    rss_mb: float | None


class PeakMemory:
    """Peak device memory (CUDA) or peak process RSS (CPU) between `start()` and `stop()`."""

    def __init__(self, device: torch.device, interval_s: float = 0.05):
        self.device = device
        self.interval_s = interval_s
        self._peak_rss = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        import psutil

        proc = psutil.Process()
        self._peak_rss = proc.memory_info().rss

        def sample():
            while not self._stop.wait(self.interval_s):
                self._peak_rss = max(self._peak_rss, proc.memory_info().rss)

        self._stop.clear()
        self._thread = threading.Thread(target=sample, daemon=True, name="fgbench-rss")
        self._thread.start()
        return self

    def stop(self) -> MemoryPeak:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        import psutil

        rss = max(self._peak_rss, psutil.Process().memory_info().rss) / 2**20
        if self.device.type == "cuda":
            return MemoryPeak(
                allocated_mb=torch.cuda.max_memory_allocated(self.device) / 2**20,
                reserved_mb=torch.cuda.max_memory_reserved(self.device) / 2**20,
                rss_mb=rss,
            )
        return MemoryPeak(allocated_mb=None, reserved_mb=None, rss_mb=rss)
