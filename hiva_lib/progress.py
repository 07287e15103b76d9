"""Progress bars for long work (rendering, preparation, training, evaluation), and a
heartbeat for long steps that have no bar."""
from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from tqdm import tqdm


def progress(iterable: Iterable | None = None, disable: bool = False, **kw) -> tqdm:
    """A tqdm bar that reads well in papermill outputs and terminals alike: on stdout (papermill
    records it in the executed notebook), ASCII, 100 columns, redrawn at most every 5 s (each
    redraw is a line of the saved output); shown on rank 0 only under DDP, and not at all
    with ``HIVA_PROGRESS=0`` (the parallel runs of an ablation, whose bars would interleave)."""
    import torch.distributed as dist

    rank0 = not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
    return tqdm(iterable, file=sys.stdout, ascii=True, mininterval=5.0, ncols=100,
                disable=disable or not rank0 or os.environ.get("HIVA_PROGRESS") == "0", **kw)


@contextmanager
def heartbeat(what: str, every: float = 30.0) -> Iterator[None]:
    """Say what a long step without a bar is doing: "<what> ..." at once, "still <what>
    (N s)" every ``every`` seconds while it runs (a silent cell looks hung), and "<what>:
    done in N s" at its end."""
    start = time.monotonic()
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every):
            tqdm.write(f"still {what} ({time.monotonic() - start:.0f} s)", file=sys.stdout)

    print(f"{what} ...", flush=True)
    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
    print(f"{what}: done in {time.monotonic() - start:.0f} s", flush=True)


def say(message: str) -> None:
    """A log line that never shares a line with a progress bar: written above the bar of this
    process (tqdm.write), and not at all in the parallel workers of an ablation
    (``HIVA_PROGRESS=0``), whose parent's bar they would be glued onto (the parent prints its
    plan, which lists the finished runs it reuses, and their status)."""
    if os.environ.get("HIVA_PROGRESS") != "0":
        tqdm.write(message, file=sys.stdout)
