"""Data parallelism over the batch, for the convolution-family layers.

NumPy runs element-wise operations (a subtraction, a comparison, an im2col copy) on one core; only
its matrix products are multi-threaded, by the BLAS library. In a CNN about half of the time goes to
such single-threaded passes, and the matrix products are many thin ones (F = 32 or 64 output
channels), which BLAS threads badly: its threads synchronise once per block of the inner dimension,
and on a shared machine each synchronisation may wait for a descheduled thread.

So the conv layers split the *batch* instead: the images are cut into chunks of a fixed size
(`spans`), the chunks are shared out among a few worker threads (each takes the next one not yet
taken), and each chunk runs the whole recipe (gather its columns, multiply, element-wise work) on
one core, while its data is in that core's cache. NumPy releases the GIL inside its loops, so the threads really run in
parallel. While chunks run, BLAS is held to one thread (`section`): the parallelism comes from the
workers, and two levels of threads would fight over the cores.

Results do not depend on the number of workers: chunk boundaries depend only on the shapes and
`digitlab.nn.conv.CHUNK_BYTES`, every chunk is computed on one thread, and per-chunk partial sums are
returned in chunk order for the caller to add up.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")
Span = tuple[int, int]

MIN_SPANS = 8  # a batch is cut into at least this many chunks (when it has that many items), so that
# up to 8 workers all get work; fixed, so that chunk boundaries never depend on the worker count

_lock = threading.Lock()
_workers: int | None = None
_pool: ThreadPoolExecutor | None = None
_blas: Any = None  # threadpoolctl's controllers of the BLAS libraries NumPy loaded
_section_depth = 0
_in_worker = threading.local()


def _blas_controllers() -> Any:
    global _blas
    if _blas is None:
        from threadpoolctl import ThreadpoolController

        _blas = ThreadpoolController().select(user_api="blas")
    return _blas


def num_workers() -> int:
    """Worker threads used: by default as many as BLAS would use (``OPENBLAS_NUM_THREADS``; the
    benchmarks set 2), at most the number of CPUs."""
    global _workers
    if _workers is None:
        libs = _blas_controllers().lib_controllers
        blas_threads = min((lib.num_threads for lib in libs), default=0)
        _workers = max(1, min(blas_threads or os.cpu_count() or 1, os.cpu_count() or 1))
    return _workers


def set_num_workers(n: int) -> None:
    """Use ``n`` worker threads from now on (1: everything runs on the calling thread)."""
    global _workers, _pool
    if n < 1:
        raise ValueError(f"need at least one worker, got {n}")
    with _lock:
        if _pool is not None:
            _pool.shutdown(wait=True)
            _pool = None
        _workers = int(n)


@contextmanager
def section() -> Iterator[None]:
    """BLAS single-threaded while inside (nested sections are free); restored on exit."""
    global _section_depth
    if _section_depth:
        _section_depth += 1
        try:
            yield
        finally:
            _section_depth -= 1
        return
    num_workers()  # fixed before BLAS threads are limited: the default follows BLAS's own count
    libs = _blas_controllers().lib_controllers
    before = [lib.num_threads for lib in libs]
    for lib in libs:
        lib.set_num_threads(1)
    _section_depth = 1
    try:
        yield
    finally:
        _section_depth = 0
        for lib, n in zip(libs, before, strict=True):
            lib.set_num_threads(n)


def spans(n: int, item_bytes: int, chunk_bytes: int) -> list[Span]:
    """``(start, stop)`` chunks of ``range(n)``: one chunk if all of it fits in ``chunk_bytes`` (for
    ``item_bytes`` per item; too little work to share), else chunks of at most ``chunk_bytes`` and
    at least `MIN_SPANS` of them when there are that many items."""
    if n * item_bytes <= chunk_bytes:
        return [(0, n)]
    size = max(1, min(chunk_bytes // max(1, item_bytes), n // MIN_SPANS))
    return [(s, min(n, s + size)) for s in range(0, n, size)]


def map_spans(fn: Callable[[int, int, int], T], chunks: Sequence[Span]) -> list[T]:
    """``[fn(start, stop, worker) for (start, stop) in chunks]``, computed by the workers.

    Each worker takes the next chunk not yet taken until none is left (dynamic scheduling: a worker
    whose core is busy with another process, or whose chunks run slower, does fewer of them, and the
    others are not kept waiting at the end). ``worker`` is the index of the thread that runs the
    chunk, so it names the scratch buffers a call may use (no two concurrent calls share one); the
    calling thread is worker 0. Which worker runs which chunk does not change any result: each chunk
    is computed by one thread alone. The results come back in chunk order; an exception in any chunk
    is raised here (the workers stop taking chunks).
    """
    workers = 1 if getattr(_in_worker, "active", False) else min(num_workers(), len(chunks))
    if workers == 1:
        with section():
            return [fn(s, e, 0) for s, e in chunks]
    results: list[Any] = [None] * len(chunks)
    tickets = itertools.count()  # next() on a count is atomic under the GIL
    failed: list[BaseException] = []

    def run(w: int) -> None:
        _in_worker.active = True
        try:
            for i in tickets:
                if i >= len(chunks) or failed:
                    return
                s, e = chunks[i]
                results[i] = fn(s, e, w)
        except BaseException as exc:
            failed.append(exc)
            raise
        finally:
            _in_worker.active = False

    with section():
        futures: list[Future[None]] = [_get_pool().submit(run, w) for w in range(1, workers)]
        try:
            run(0)
        finally:
            for f in futures:  # wait for all before leaving the section; the caller's error first
                f.exception()
        for f in futures:
            f.result()
        return results


def _get_pool() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max(1, num_workers() - 1), thread_name_prefix="digitlab-nn")
        return _pool
