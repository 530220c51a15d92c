"""GPU power from NVML (nvidia-ml-py), measured over a looped window of work.

NVML facts this module is written around (the campaign records the evidence for each):
- Volta and newer have a total-energy counter (mJ) that updates only about every 100 ms, so a
  window reads the counter at update edges: it keeps the work running until the counter changes,
  at the start and at the end, and divides the energy between the two edges by their time.
- `nvmlDeviceGetPowerUsage` is a ~1 s moving average on Ampere and newer: polled power needs a
  window longer than that, and the first second of polls is dropped (`settle_s`).
- Power rises with temperature and clocks: every window records temperature and SM/memory clocks.
The pynvml-like module is passed in, so tests reach every path with a fake one.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

from ..errors import NpowerError

Work = Callable[[], None]


def open_nvml(device_id: int = 0):
    """The pynvml module, initialised, and the device handle; NpowerError when NVML is absent."""
    try:
        import pynvml
    except ImportError:
        raise NpowerError("nvidia-ml-py is not installed (pip install nvidia-ml-py): no GPU power readings") from None
    try:
        pynvml.nvmlInit()
        return pynvml, pynvml.nvmlDeviceGetHandleByIndex(device_id)
    except pynvml.NVMLError as exc:
        raise NpowerError(f"NVML unavailable ({exc}): is the NVIDIA driver installed?") from exc


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Poller:
    """Board power polled every `interval` s in a thread: (seconds since start, watts) pairs."""

    def __init__(self, read: Callable[[], float], interval: float = 0.01):
        self.read, self.interval = read, interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.start = time.perf_counter()
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter() - self.start, self.read()))
            self._stop.wait(self.interval)

    def stop(self) -> list[tuple[float, float]]:
        self._stop.set()
        self._thread.join()
        return self.samples


def integrate(samples: list[tuple[float, float]]) -> float:
    """Joules under a polled power curve (trapezoids over (seconds, watts) pairs)."""
    return sum((t1 - t0) * (w0 + w1) / 2 for (t0, w0), (t1, w1) in zip(samples, samples[1:]))


class PowerMeter:
    """Average board power of a device while some work loops, from NVML."""

    def __init__(self, nv, handle, poll_interval: float = 0.01, settle_s: float = 1.0, edge_timeout: float = 0.5):
        self.nv, self.handle = nv, handle
        self.poll_interval, self.settle_s, self.edge_timeout = poll_interval, settle_s, edge_timeout
        self.has_energy = self._probe_energy()

    @classmethod
    def open(cls, device_id: int = 0) -> "PowerMeter":
        return cls(*open_nvml(device_id))

    def _probe_energy(self) -> bool:
        try:
            self.nv.nvmlDeviceGetTotalEnergyConsumption(self.handle)
            return True
        except self.nv.NVMLError:
            return False

    def energy_mj(self) -> float:
        return float(self.nv.nvmlDeviceGetTotalEnergyConsumption(self.handle))

    def power_w(self) -> float:
        return self.nv.nvmlDeviceGetPowerUsage(self.handle) / 1000.0

    def info(self) -> dict[str, Any]:
        nv, h = self.nv, self.handle
        return {"name": _text(nv.nvmlDeviceGetName(h)), "driver": _text(nv.nvmlSystemGetDriverVersion()),
                "memory_gb": round(nv.nvmlDeviceGetMemoryInfo(h).total / 2 ** 30, 1),
                "power_limit_w": nv.nvmlDeviceGetPowerManagementLimit(h) / 1000.0,
                "sm_clock_max_mhz": nv.nvmlDeviceGetMaxClockInfo(h, nv.NVML_CLOCK_SM),
                "mem_clock_max_mhz": nv.nvmlDeviceGetMaxClockInfo(h, nv.NVML_CLOCK_MEM),
                "power_source": "nvml total energy counter, edge-aligned windows" if self.has_energy
                else f"nvml power polling ({self.poll_interval * 1000:.0f} ms, first {self.settle_s} s dropped)"}

    def state(self) -> dict[str, Any]:
        """Temperature and clocks now."""
        nv, h = self.nv, self.handle
        return {"temperature_c": nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU),
                "sm_clock_mhz": nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM),
                "mem_clock_mhz": nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM)}

    def _edge(self, work: Work) -> tuple[float, float, int]:
        """Keep `work` going until the energy counter changes: (mJ, perf_counter s, calls made)."""
        first, start, calls = self.energy_mj(), time.perf_counter(), 0
        while True:
            work()
            calls += 1
            value, now = self.energy_mj(), time.perf_counter()
            if value != first or now - start > self.edge_timeout:
                return value, now, calls

    def window(self, work: Work, seconds: float, sync: Callable[[], None] = lambda: None,
               poll: bool = False) -> dict[str, Any]:
        """Average power (W) while `work` loops for about `seconds`, with the evidence behind it.

        Energy-counter path: `watts` = counter energy between two update edges / their time.
        With `poll` (or without a counter) power is also polled and integrated over the window,
        so the two readings of the same window can be compared (`polled_w`, `polled_j`).
        """
        poller = Poller(self.power_w, self.poll_interval) if poll or not self.has_energy else None
        settle = 0.0 if self.has_energy else self.settle_s
        if self.has_energy:
            e0, t0, _ = self._edge(work)
        else:
            t0 = time.perf_counter()
        calls = 0
        while time.perf_counter() - t0 < seconds + settle:
            work()
            calls += 1
        sync()
        result: dict[str, Any] = {}
        if self.has_energy:
            e1, t1, more = self._edge(work)
            sync()
            calls += more
            result.update(power_method="energy_counter", watts=(e1 - e0) / 1000.0 / (t1 - t0), counter_j=(e1 - e0) / 1000.0)
        else:
            t1 = time.perf_counter()
        result.update(window_s=t1 - t0, window_calls=calls, **self.state())
        if poller is not None:
            start = t0 - poller.start
            kept = [(t, w) for t, w in poller.stop() if start + settle <= t <= t1 - poller.start]
            polled = sum(w for _, w in kept) / len(kept) if kept else None
            result.update(polled_w=polled, polled_n=len(kept), polled_j=integrate(kept))
            if not self.has_energy:
                result.update(power_method="polling", watts=polled)
        return result

    def idle(self, seconds: float, rest_s: float = 2.0) -> dict[str, Any]:
        """Idle power: rest `rest_s`, then a window of `seconds` with nothing running."""
        time.sleep(rest_s)
        return self.window(lambda: time.sleep(0.002), seconds, poll=True)
