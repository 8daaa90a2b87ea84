"""Peak memory of a block of code, on the CPU or on CUDA (used by ``bench_dpo_memory.py``)."""
from __future__ import annotations

import gc
import threading
import time
from typing import Optional

import torch


class PeakMemory:
    """Peak memory while the block runs.

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: the process's resident-set high-water
    mark (``VmHWM``), reset at the start by writing 5 to ``/proc/self/clear_refs``
    (Linux); elsewhere a thread samples the RSS with psutil every 5 ms.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.bytes = 0
        self.start_bytes = 0
        self.method = ""
        self._stop = None

    @staticmethod
    def _status(field_name: str) -> Optional[int]:
        try:
            with open("/proc/self/status", encoding="utf-8") as status:
                for line in status:
                    if line.startswith(field_name + ":"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def __enter__(self):
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            self.start_bytes = torch.cuda.memory_allocated()
            self.method = "torch.cuda.max_memory_allocated"
            return self
        try:
            with open("/proc/self/clear_refs", "w", encoding="utf-8") as handle:
                handle.write("5")
            if self._status("VmHWM") is not None:
                self.start_bytes = self._status("VmRSS") or 0
                self.method = "RSS máximo (VmHWM)"
                return self
        except OSError:
            pass
        import psutil

        process, self._stop = psutil.Process(), threading.Event()
        self.start_bytes = process.memory_info().rss
        self.method = "RSS máximo (psutil, amostrado)"

        def sample():
            while not self._stop.is_set():
                self.bytes = max(self.bytes, process.memory_info().rss)
                time.sleep(0.005)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.bytes = torch.cuda.max_memory_allocated()
        elif self._stop is not None:
            self._stop.set()
            self._thread.join()
        else:
            self.bytes = self._status("VmHWM") or 0
        return False
