"""Independent max-flow reference for attention flow (networkx on the full layered graph)."""

from __future__ import annotations

from typing import Any

import networkx as nx
import numpy as np


def nx_flow(a_hat: np.ndarray, readout: np.ndarray, one_hot: bool) -> np.ndarray:
    """Max-flow from every ``(0, j)`` to the readout node on the full layered graph.

    Args:
        a_hat: ``[L, seq, seq]`` residual-augmented maps, input side first (row = query).
        readout: ``[seq]`` readout weights over top-layer positions.
        one_hot: the readout is one-hot: its position's top node is the sink; otherwise a
            super-sink is fed by every top node ``(L, i)`` with capacity ``readout[i]``.
    """
    layers, seq, _ = a_hat.shape
    graph = nx.DiGraph()
    graph.add_nodes_from((layer, i) for layer in range(layers + 1) for i in range(seq))
    for layer in range(1, layers + 1):
        for i in range(seq):
            for j in range(seq):
                capacity = float(a_hat[layer - 1, i, j])
                if capacity > 0:
                    graph.add_edge((layer - 1, j), (layer, i), capacity=capacity)
    if one_hot:
        (positions,) = np.nonzero(readout)
        assert len(positions) == 1
        sink: Any = (layers, int(positions[0]))
    else:
        sink = "super-sink"
        graph.add_node(sink)
        for i in range(seq):
            if readout[i] > 0:
                graph.add_edge((layers, i), sink, capacity=float(readout[i]))
    return np.array([nx.maximum_flow_value(graph, (0, j), sink) for j in range(seq)])
