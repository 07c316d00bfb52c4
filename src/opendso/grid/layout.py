"""Drawing coordinates for grids without geography: a layered schematic of the source tree.

:func:`tree_layout` takes the predecessor of each node towards the source (``-1`` for a root, as
in :attr:`~opendso.grid.topology.Topology.pred_node`) and returns ``(n, 2)`` coordinates: ``y`` is
``-depth`` (the roots at 0, each node one layer below its predecessor) and ``x`` spreads the
tree's leaves in depth-first order, one unit apart, each parent centred over its children.
Nodes the source tree does not reach (a predecessor out of range) are roots of their own.
Arrays in, arrays out: numpy and scipy only, one vectorised step per depth level, so 100,000
nodes take milliseconds. :func:`schematic_layout` does the same for a :class:`Grid`, finding
the source tree with :func:`~opendso.grid.topology.analyse_topology` when it is not given.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from scipy.sparse import csgraph

from opendso.grid.model import Grid
from opendso.grid.topology import analyse_topology

__all__ = ["schematic_layout", "tree_layout"]


def tree_layout(pred_node: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Return ``(n, 2)`` schematic coordinates of a forest: x spreads the leaves, y = -depth.

    ``pred_node[i]`` is the row of node ``i``'s predecessor towards its root (-1 for a root);
    entries outside ``0 <= p < n`` make the node a root. Every coordinate is finite.
    """
    pred = np.asarray(pred_node, dtype=np.int64).reshape(-1)
    n = pred.size
    if n == 0:
        return np.zeros((0, 2))
    pred = np.where((pred >= 0) & (pred < n), pred, -1)
    has_pred = pred >= 0
    children = np.flatnonzero(has_pred)
    parents = pred[has_pred]
    # depth level by level from the roots: one sparse row gather per level
    depth = np.full(n, -1, dtype=np.int64)
    frontier = np.flatnonzero(~has_pred)
    depth[frontier] = 0
    children_of = sp.csr_array((np.ones(children.size), (parents, children)), shape=(n, n))
    levels: list[npt.NDArray[np.int64]] = []
    level = 0
    while frontier.size:
        levels.append(frontier)
        level += 1
        nxt = np.unique(children_of[frontier].indices).astype(np.int64)
        nxt = nxt[depth[nxt] < 0]
        depth[nxt] = level
        frontier = nxt
    depth[depth < 0] = 0  # nodes on a predecessor cycle: no root reaches them
    # depth-first order from a virtual super-root (row n) over all roots
    roots = np.flatnonzero(~has_pred)
    rows = np.concatenate([np.full(roots.size, n), parents])
    cols = np.concatenate([roots, children])
    tree = sp.csr_array((np.ones(rows.size), (rows, cols)), shape=(n + 1, n + 1))
    order = csgraph.depth_first_order(tree, n, directed=True, return_predecessors=False)
    order = order[order < n]
    n_children = np.bincount(parents, minlength=n)
    x = np.full(n, np.nan)
    leaves = order[n_children[order] == 0]
    x[leaves] = np.arange(leaves.size, dtype=float)
    for lvl in reversed(levels[1:]):
        # parents of this level take the mean x of their children
        placed = lvl[~np.isnan(x[lvl])]
        up = pred[placed]
        sums = np.bincount(up, weights=x[placed], minlength=n)
        counts = np.bincount(up, minlength=n)
        done = np.flatnonzero(counts)
        x[done] = sums[done] / counts[done]
    x[np.isnan(x)] = 0.0
    return np.column_stack([x, -depth.astype(float)])


def schematic_layout(grid: Grid, pred_node: npt.ArrayLike | None = None) -> npt.NDArray[np.float64]:
    """Return ``(n, 2)`` schematic coordinates of ``grid``'s nodes (see :func:`tree_layout`).

    ``pred_node`` is the source tree of :func:`~opendso.grid.topology.analyse_topology` (computed
    when not given); its length must be the grid's node count.
    """
    n = grid.count("node")
    if n == 0:
        return np.zeros((0, 2))
    pred = analyse_topology(grid).pred_node if pred_node is None else np.asarray(pred_node, dtype=np.int64)
    if pred.shape != (n,):
        raise ValueError(f"{grid.name}: pred_node has shape {pred.shape}, the grid has {n} nodes")
    return tree_layout(pred)
