"""Where trials run: inline, or on Dask (a `LocalCluster` of N workers, or any scheduler address).

An executor evaluates one batch of requests and calls `on_done(index, outcome)` as each finishes (so the driver can
journal it at once), then returns the outcomes in request order (so the strategy is told in a fixed order, and the
search does not depend on which worker finished first).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, Iterator

Request = dict[str, Any]
Outcome = dict[str, Any]
OnDone = Callable[[int, Outcome], None]


class SequentialExecutor:
    """Evaluate requests one after the other in this process."""

    def map(self, fn: Callable[[Request], Outcome], requests: list[Request], on_done: OnDone) -> list[Outcome]:
        outcomes = []
        for index, request in enumerate(requests):
            outcome = fn(request)
            on_done(index, outcome)
            outcomes.append(outcome)
        return outcomes


class DaskExecutor:
    """Evaluate a batch in parallel on a `distributed.Client`; a lost worker becomes a failed trial."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def map(self, fn: Callable[[Request], Outcome], requests: list[Request], on_done: OnDone) -> list[Outcome]:
        from distributed import as_completed

        futures = [self.client.submit(fn, request, pure=False) for request in requests]
        index_of = {future.key: i for i, future in enumerate(futures)}
        outcomes: list[Outcome | None] = [None] * len(requests)
        for future in as_completed(futures):
            index = index_of[future.key]
            try:
                outcome = future.result()
            except Exception as error:  # noqa: BLE001  (e.g. KilledWorker after an out-of-memory kill)
                outcome = {"status": "failed", "error": f"{type(error).__name__}: {error}", "wall_time_s": 0.0}
            outcomes[index] = outcome
            on_done(index, outcome)
        return outcomes  # type: ignore[return-value]


@contextlib.contextmanager
def open_executor(workers: int = 1, scheduler: str | None = None, processes: bool = True) -> Iterator[Any]:
    """An executor for `workers` local Dask workers (1: inline, no Dask) or for the cluster at `scheduler`."""
    if scheduler is None and workers <= 1:
        yield SequentialExecutor()
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ImportError("Parallel search needs Dask: `pip install 'dask[distributed]'`.") from None
    if scheduler is not None:
        client = Client(scheduler)
        try:
            yield DaskExecutor(client)
        finally:
            client.close()
        return
    cluster = LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=processes, dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    client = Client(cluster)
    try:
        yield DaskExecutor(client)
    finally:
        client.close()
        cluster.close()
