"""Exact attention-flow values on the layered attention graph, solved with igraph.

The graph of Abnar & Zuidema (2020) has a node for every position at every layer boundary and
an edge from position ``j`` at layer ``l-1`` to position ``i`` at layer ``l`` with capacity
``A_hat_l[i, j]``. The flow score of input position ``j`` is the maximum flow from its
layer-0 node to the readout node at the top.

Two exact reductions keep the graph small without changing any max-flow value:

- Only one layer-0 node can carry flow for a given source (edges only go upwards), so layer 0
  is a single source node whose ``seq`` out-edges get the source's column
  ``A_hat_1[:, j]`` as capacities; the rest of the graph is built once per sample.
- A one-hot readout (a single weight of exactly 1 at position ``c``) makes ``(L, c)`` the
  sink: the other top-layer nodes reach no sink and are left out. Any other readout is
  weighted: a super-sink is fed from every top-layer node ``i`` with capacity ``w_i``.

Edges of zero capacity (padding) are dropped. igraph's push-relabel max-flow takes
real-valued capacities, so the values are exact up to floating-point rounding.
"""

from __future__ import annotations

import numpy as np


def _igraph():
    try:
        import igraph
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "AttentionFlow needs the igraph package: pip install 'ehrlens[flow]'"
        ) from error
    return igraph


def flow_values(maps: np.ndarray, readout: np.ndarray) -> np.ndarray:
    """Max-flow from every input position to the readout, for one sample.

    Args:
        maps: residual-augmented maps ``A_hat`` of every layer, input side first:
            ``[layers, seq, seq]`` (row ``i`` = query, column ``j`` = key).
        readout: non-negative readout weights over top-layer positions ``[seq]``.

    Returns:
        ``[seq]``: the maximum flow from each layer-0 position to the readout.

    Example:
        >>> a_hat = 0.5 * (np.full((1, 2, 2), 0.5) + np.eye(2))
        >>> flow_values(a_hat, np.array([1.0, 0.0]))     # one layer: flow == rollout
        array([0.75, 0.25])
    """
    maps = np.asarray(maps, dtype=np.float64)
    readout = np.asarray(readout, dtype=np.float64)
    layers, seq, _ = maps.shape
    if layers == 0:
        return readout.copy()
    sinks = np.flatnonzero(readout > 0)
    one_hot = len(sinks) == 1 and readout[sinks[0]] == 1.0

    # Node ids: 0 = source; layer l in 1..L-1 -> 1 + (l-1)*seq + i; then the sink node(s).
    def node(layer: int, position: np.ndarray) -> np.ndarray:
        return 1 + (layer - 1) * seq + position

    top_base = 1 + (layers - 1) * seq
    if one_hot:
        sink = top_base
        n_nodes = top_base + 1
    else:
        sink = top_base + len(sinks)
        n_nodes = sink + 1
    if layers == 1:
        return _single_layer(maps[0], readout, sinks if one_hot else None)
    src, dst, cap = [], [], []
    first = np.arange(seq)
    # Layer 1: source -> (1, i); the capacities are the current source's column.
    src.append(np.zeros(seq, dtype=np.int64))
    dst.append(node(1, first))
    cap.append(np.zeros(seq))
    rows, cols = np.meshgrid(first, first, indexing="ij")
    for layer in range(2, layers):
        c = maps[layer - 1][rows, cols]  # edge (layer-1, j) -> (layer, i) has A_hat[i, j]
        keep = c > 0
        src.append(node(layer - 1, cols[keep]))
        dst.append(node(layer, rows[keep]))
        cap.append(c[keep])
    top = maps[layers - 1]
    if one_hot:
        c = top[sinks[0]]
        keep = c > 0
        src.append(node(layers - 1, first[keep]))
        dst.append(np.full(int(keep.sum()), sink, dtype=np.int64))
        cap.append(c[keep])
    else:
        for k, i in enumerate(sinks):
            c = top[i]
            keep = c > 0
            src.append(node(layers - 1, first[keep]))
            dst.append(np.full(int(keep.sum()), top_base + k, dtype=np.int64))
            cap.append(c[keep])
        src.append(top_base + np.arange(len(sinks)))
        dst.append(np.full(len(sinks), sink, dtype=np.int64))
        cap.append(readout[sinks])
    edges = np.stack([np.concatenate(src), np.concatenate(dst)], axis=1)
    capacity = np.concatenate(cap)
    graph = _igraph().Graph(n=n_nodes, edges=edges.tolist(), directed=True)
    out = np.zeros(seq)
    first_layer = maps[0]
    for j in range(seq):
        column = first_layer[:, j]
        if not column.any():
            continue
        capacity[:seq] = column
        out[j] = graph.maxflow_value(0, sink, capacity=capacity.tolist())
    return out


def _single_layer(
    a_hat: np.ndarray, readout: np.ndarray, one_hot_sink: np.ndarray | None
) -> np.ndarray:
    """One layer, in closed form: ``A_hat[c, j]`` for a one-hot readout at ``c``; otherwise
    ``sum_i min(A_hat[i, j], w_i)`` (every path is source -> (1, i) -> super-sink)."""
    if one_hot_sink is not None:
        return a_hat[one_hot_sink[0]].copy()
    return np.minimum(a_hat, readout[:, None]).sum(axis=0)
