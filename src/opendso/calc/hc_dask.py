"""Hosting capacity split across Dask workers: tasks per feeder and node chunk, a LocalCluster by default.

The nodes to study are grouped by feeder (:func:`opendso.grid.topology.analyse_topology`), in
node order within a feeder, and each feeder's nodes are cut into chunks of ``chunk_nodes``; every
chunk is one task (:func:`opendso.calc.hosting_capacity.study_nodes`). The grid is sent to the
workers once (``scatter``, broadcast).

What is assumed: nothing about the source. Every task models the *whole* grid, so a node's answer
includes what its extra power does to other feeders through the transformer and the source's
impedance; grouping by feeder only keeps the nodes of a task close together (they bind on the same
elements, so their rounds end together). A study that cut the grid into feeders would have to
assume a stiff source (the busbar voltage not moved by another feeder's extra power); this one
does not, and pays for it in time per task.

The chunks and the order of the results depend only on the grid, the nodes and ``chunk_nodes``,
never on the number of workers, so 1, 2 or 4 workers give identical results.

``scheduler`` is the address of a running scheduler (``tcp://host:8786``); without it a
LocalCluster of ``workers`` single-threaded workers is started on 127.0.0.1 and closed at the end
(``processes`` False runs the workers as threads of this process, which tests prefer).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from opendso.calc.hosting_capacity import (
    HostingCapacityResult,
    NodeHostingCapacity,
    check_margin_filter,
    check_steps,
    resolve_nodes,
    study_nodes,
)
from opendso.calc.timeseries import ViolationLimits
from opendso.errors import CalculationError, InputError
from opendso.grid.model import Grid

__all__ = ["node_chunks", "run_hosting_capacity"]

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]


def node_chunks(grid: Grid, node_ids: Sequence[int] | np.ndarray, chunk_nodes: int) -> list[np.ndarray]:
    """Return the node ids cut into tasks: grouped by feeder (feeders in id order), ``chunk_nodes`` at most per task."""
    from opendso.grid.topology import analyse_topology

    ids = np.asarray(node_ids, dtype=np.int64)
    if ids.size == 0:
        return []
    topology = analyse_topology(grid)
    feeder = topology.node_feeder[grid.node_positions(ids)]
    chunks: list[np.ndarray] = []
    for f in np.unique(feeder):
        members = ids[feeder == f]
        chunks.extend(members[start : start + chunk_nodes] for start in range(0, members.size, chunk_nodes))
    return chunks


def run_hosting_capacity(
    grid: Grid,
    *,
    nodes: Sequence[str] | None = None,
    steps: int | None = None,
    limits: ViolationLimits | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
    processes: bool = True,
    chunk_nodes: int = 8,
    progress: ProgressCallback | None = None,
    client: Any = None,
    margin_filter: float | None = None,
) -> HostingCapacityResult:
    """Return the hosting capacity of ``nodes`` (every energised node when None), the study run on Dask.

    Results come back in the order of the requested nodes (the grid's node order without
    ``nodes``). ``margin_filter`` (None: every step judged by a power flow) is the optional step
    filter of :mod:`opendso.calc.hosting_capacity`. Raises :class:`~opendso.errors.InputError`
    for bad input (unknown node, no profiles, a scheduler address that is not ``tcp://``/``tls://``) and
    :class:`~opendso.errors.CalculationError` when a task fails.
    """
    limits = limits or ViolationLimits()
    n_steps = check_steps(grid, steps)
    check_margin_filter(margin_filter)
    ids = resolve_nodes(grid, nodes)
    if workers is not None and workers < 1:
        raise InputError(f"--workers {workers}: must be at least 1")
    if scheduler is not None and not scheduler.startswith(("tcp://", "tls://", "inproc://")):
        raise InputError(f"--scheduler {scheduler}: expected an address such as tcp://host:8786")
    chunks = node_chunks(grid, ids, max(1, chunk_nodes))
    from dask.distributed import Client, LocalCluster

    if client is not None:  # a caller's client (a cluster kept between studies): left open
        return HostingCapacityResult(
            grid=grid.name,
            steps=n_steps,
            nodes=_gather(client, grid, ids, chunks, n_steps, limits, progress, margin_filter),
            limits=limits,
        )
    cluster: Any = None
    if scheduler is not None:
        try:
            own: Any = Client(scheduler, timeout="10s")  # type: ignore[no-untyped-call]
        except OSError as exc:
            raise InputError(f"--scheduler {scheduler}: cannot reach the Dask scheduler: {exc}") from exc
    else:
        # worker processes listen on loopback only; threads talk in-process (no socket at all)
        where: dict[str, Any] = {"host": "127.0.0.1"} if processes else {}
        cluster = LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=workers or 1,
            threads_per_worker=1,
            processes=processes,
            dashboard_address=None,
            **where,
        )
        try:
            own = Client(cluster)  # type: ignore[no-untyped-call]
        except BaseException:
            cluster.close()
            raise
    try:
        nodes_found = _gather(own, grid, ids, chunks, n_steps, limits, progress, margin_filter)
    finally:
        own.close()
        if cluster is not None:
            cluster.close()
    return HostingCapacityResult(grid=grid.name, steps=n_steps, nodes=nodes_found, limits=limits)


def _gather(
    client: Any,
    grid: Grid,
    ids: np.ndarray,
    chunks: list[np.ndarray],
    n_steps: int,
    limits: ViolationLimits,
    progress: ProgressCallback | None,
    margin_filter: float | None = None,
) -> tuple[NodeHostingCapacity, ...]:
    """Submit one task per chunk, collect the records as they finish, return them in ``ids`` order."""
    from dask.distributed import as_completed

    results: dict[int, NodeHostingCapacity] = {}
    remote_grid = client.scatter(grid, broadcast=True)
    # one thread per worker: power-grid-model runs each batch sequentially, the parallelism is Dask's
    futures = [
        client.submit(
            study_nodes, remote_grid, chunk, n_steps, limits, threading=-1, margin_filter=margin_filter, pure=False
        )
        for chunk in chunks
    ]
    done = 0
    if progress is not None:
        progress(0, ids.size)
    try:
        for future in as_completed(futures):  # type: ignore[no-untyped-call]
            try:
                part: list[NodeHostingCapacity] = future.result()
            except Exception as exc:
                raise CalculationError(f"{grid.name}: hosting-capacity task failed: {exc}") from exc
            for record in part:
                results[record.node_id] = record
            done += len(part)
            if progress is not None:
                progress(done, ids.size)
    finally:
        client.cancel(futures)
    return tuple(results[int(i)] for i in ids)
