"""The schematic layout of grids without geography (opendso.grid.layout): arrays in, arrays out."""

from __future__ import annotations

import numpy as np
import pytest

from opendso.grid.layout import tree_layout


def test_a_tree_is_layered_and_parents_are_centred_over_their_children() -> None:
    #      0
    #    /   \
    #   1     2
    #  / \    |
    # 3   4   5
    pred = np.array([-1, 0, 0, 1, 1, 2])
    xy = tree_layout(pred)
    assert xy.shape == (6, 2)
    assert xy[:, 1].tolist() == [0, -1, -1, -2, -2, -2]
    assert sorted(xy[[3, 4, 5], 0].tolist()) == [0.0, 1.0, 2.0]  # leaves one unit apart
    assert xy[1, 0] == pytest.approx((xy[3, 0] + xy[4, 0]) / 2)
    assert xy[2, 0] == xy[5, 0]
    assert xy[0, 0] == pytest.approx((xy[1, 0] + xy[2, 0]) / 2)


def test_several_roots_and_isolated_nodes_get_their_own_places() -> None:
    xy = tree_layout([-1, 0, -1, 2, -1])
    assert np.isfinite(xy).all()
    assert xy[[0, 2, 4], 1].tolist() == [0, 0, 0]
    assert len({tuple(p) for p in xy.tolist()}) == 5  # nobody on top of anybody


@pytest.mark.parametrize(
    "pred",
    [
        [],  # no nodes
        [1, 0],  # a cycle and no root
        [0, 0, 1],  # a self-loop
        [-1, 7, -99, 2**40],  # predecessors out of range are roots
        [-1, 0, 1, 2, 0, 4, 3, 2, 1, 8, 8, 3],  # uneven depths
    ],
)
def test_hostile_predecessors_give_finite_coordinates(pred: list[int]) -> None:
    xy = tree_layout(np.asarray(pred, dtype=np.int64))
    assert xy.shape == (len(pred), 2)
    assert np.isfinite(xy).all()


def test_a_long_feeder_is_laid_out_quickly() -> None:
    n = 100_000
    rng = np.random.default_rng(1)
    pred = np.concatenate([[-1], rng.integers(0, np.arange(1, n))])  # a random tree, parents before children
    xy = tree_layout(pred)
    child = np.flatnonzero(pred >= 0)
    assert np.all(xy[child, 1] == xy[pred[child], 1] - 1)
