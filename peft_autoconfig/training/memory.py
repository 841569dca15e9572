"""Peak memory of one run: GPU allocator peak on CUDA, the process's resident-set peak on CPU.

On CUDA we reset and read `torch.cuda.max_memory_allocated` (tensors only, this device). On Linux we reset the
kernel's resident-set high-water mark (`/proc/self/clear_refs`, value 5) and read `VmHWM` afterwards: the
whole process (interpreter, libraries, model, activations), exact and free of sampling. Elsewhere a thread
samples `psutil` RSS every 20 ms. tracemalloc is not used: it misses tensor memory allocated by torch in C++.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Optional

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _vm_hwm() -> Optional[int]:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class PeakMemory:
    """`with PeakMemory() as peak: ...` then `peak.bytes`; `peak.kind` says what was measured."""

    def __init__(self) -> None:
        self.bytes = 0
        self.kind = ""
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()

    def __enter__(self) -> "PeakMemory":
        import torch

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
            self.kind = "cuda_max_memory_allocated"
        elif self._reset_hwm():
            self.kind = "process_peak_rss"
        else:
            self.kind = "process_peak_rss_sampled"
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        import torch

        if self.kind == "cuda_max_memory_allocated":
            self.bytes = int(torch.cuda.max_memory_allocated())
        elif self.kind == "process_peak_rss":
            self.bytes = _vm_hwm() or 0
        else:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()

    @staticmethod
    def _reset_hwm() -> bool:
        if _vm_hwm() is None:
            return False
        try:
            _CLEAR_REFS.write_text("5")
        except OSError:
            return False
        return True

    def _sample(self) -> None:
        import psutil

        process = psutil.Process()
        while True:
            self.bytes = max(self.bytes, process.memory_info().rss)
            if self._stop.wait(0.02):
                return
