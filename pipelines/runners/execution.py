"""Run a runner's tasks on a dask scheduler: threads here, or a distributed cluster.

A runner describes its work as independent *jobs* (a block of tiles, a slab of a
volume) and one module-level function ``func(job, **shared) -> dict`` that does a job
from start to finish inside the worker: read, decode, infer, write its chunk, write its
completion mark. The same graph runs on:
- the threaded scheduler (``dask.threaded.get`` on a pool owned by this call, shut down
  before returning): no pickling, shared engine sessions; the default, because reads
  (imagecodecs, OpenSlide) and ONNX Runtime release the GIL;
- a dask.distributed cluster (``scheduler`` = an address, or "local-cluster"): the shared
  objects are scattered once to every worker, jobs are submitted as tasks, and a task
  lost with a dead worker is rerun by the scheduler elsewhere.
Progress advances by each finished job's weight (its tile count); the cancel event
stops new jobs from starting (finished ones stay recorded).
"""

from __future__ import annotations

import contextlib
import functools
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tessera.pipelines.progress import Cancelled, ProgressReporter, check_cancelled

LOCAL_SCHEDULERS = (None, "", "threads", "sync")


def run_jobs(
    func: Callable[..., dict[str, Any]],
    jobs: Sequence[Any],
    shared: dict[str, Any],
    *,
    scheduler: str | None,
    workers: int,
    progress: ProgressReporter,
    cancel: threading.Event | None,
    weight: Callable[[Any], int] = lambda job: 1,
    on_result: Callable[[Any, dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run ``func(job, **shared)`` for every job; results in job order.

    Raises ``Cancelled`` when ``cancel`` is set (jobs already finished keep their marks),
    or the first exception a job raised.
    """
    if not jobs:
        return []
    if scheduler in LOCAL_SCHEDULERS:
        return _run_threads(func, jobs, shared, workers=1 if scheduler == "sync" else workers,
                            progress=progress, cancel=cancel, weight=weight, on_result=on_result)
    with distributed_client(scheduler, workers=workers) as client:
        return _run_distributed(client, func, jobs, shared, progress=progress, cancel=cancel,
                                weight=weight, on_result=on_result)


def _run_threads(func, jobs, shared, *, workers, progress, cancel, weight, on_result):
    from dask.callbacks import Callback
    from dask.threaded import get

    task = functools.partial(func, **shared)
    prefix = f"tessera-job-{uuid.uuid4().hex[:8]}"
    keys = [(prefix, i) for i in range(len(jobs))]
    dsk = {key: (task, job) for key, job in zip(keys, jobs, strict=True)}
    index = {key: i for i, key in enumerate(keys)}

    class _Report(Callback):
        def _pretask(self, key, dsk, state):
            check_cancelled(cancel)

        def _posttask(self, key, result, dsk, state, worker_id):
            i = index.get(key)
            if i is not None:
                if on_result is not None:
                    on_result(jobs[i], result)
                progress.advance(weight(jobs[i]))

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="tessera") as pool:
        try:
            results = get(dsk, keys, pool=pool, num_workers=max(1, workers), callbacks=[_Report()._callback])
        except Cancelled:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return list(results)


def _run_distributed(client, func, jobs, shared, *, progress, cancel, weight, on_result):
    from distributed import as_completed

    scattered = {}
    for name, value in shared.items():
        # Small specs go inline; anything else (an in-memory Source) is sent once.
        scattered[name] = client.scatter(value, broadcast=True, hash=False) if _is_bulky(value) else value
    futures = [
        client.submit(func, job, **scattered, pure=False, key=f"tessera-job-{uuid.uuid4().hex}")
        for job in jobs
    ]
    position = {f.key: i for i, f in enumerate(futures)}
    results: list[dict[str, Any] | None] = [None] * len(jobs)
    try:
        for fut in as_completed(futures, loop=client.loop):
            if cancel is not None and cancel.is_set():
                raise Cancelled
            i = position[fut.key]
            results[i] = fut.result()
            if on_result is not None:
                on_result(jobs[i], results[i])
            progress.advance(weight(jobs[i]))
    finally:
        client.cancel([f for f in futures if not f.done()])
    return results  # type: ignore[return-value]


def _is_bulky(value: Any) -> bool:
    return bool(getattr(value, "travels_whole", False))


@contextlib.contextmanager
def distributed_client(address: str | None, *, workers: int) -> Iterator[Any]:
    """A dask.distributed Client: to ``address``, or to a LocalCluster of ``workers``
    single-threaded processes on loopback for "local-cluster". Never set as dask's
    default, so nothing else in this process is sent to the cluster by accident."""
    from distributed import Client, LocalCluster

    if address == "local-cluster":
        cluster = LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True,
            host="127.0.0.1", dashboard_address=None,
        )
        try:
            with Client(cluster, set_as_default=False) as client:
                yield client
        finally:
            cluster.close()
        return
    try:
        client = Client(address, set_as_default=False, timeout="20s")
    except OSError as exc:
        from tessera.pipelines.errors import TesseraError

        msg = f"cannot reach the dask scheduler at {address} ({exc}); check the address or start it"
        raise TesseraError(msg) from exc
    try:
        yield client
    finally:
        client.close()
