"""The tolerances of float comparisons that cross a batch size, a thread count, a device or
another code path, and the one place that says why they are that size.

Float arithmetic is not associative, and batched kernels (matrix products, softmax, sums)
choose their blocking and summation order from the shapes they get and the threads they may
use. The same patient therefore gets scores that differ in the last bits when it shares a
batch with other patients, when padding around it changes, when the machine runs another
thread count, or when a worker process (Ray, a command-line run) computes it. float32 has a
unit roundoff of 2**-24 (about 6e-8); the tiny test models chain at most a few dozen
reductions over at most a few hundred terms, and the differences seen are a few ulps of
values of order 1 (1e-7). ``FLOAT32_ACROSS`` allows ten times that, and stays far below any
effect a test looks for (scores of different codes, methods or patients differ by 1e-3 and
more). float64 computations get ``FLOAT64_ACROSS`` on the same reasoning (roundoff 1e-16).

Exact equality (``torch.equal``, ``atol=0, rtol=0``, ``check_exact=True``) is kept only where
the very same computation runs twice in one process, with the same inputs, shapes and thread
count: determinism, resumed runs, a saved and reloaded model. Those places say so.

>>> import torch
>>> a = torch.tensor([0.1, 0.2, 0.3]).sum()
>>> b = torch.tensor([0.3, 0.2, 0.1]).sum()  # same numbers, another order
>>> torch.testing.assert_close(a, b, **FLOAT32_ACROSS)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

#: float32 results of one computation by different batch sizes, threads or kernels.
FLOAT32_ACROSS: dict[str, float] = {"rtol": 1e-5, "atol": 1e-6}
#: float64 results of one computation by different batch sizes, threads or kernels.
FLOAT64_ACROSS: dict[str, float] = {"rtol": 1e-10, "atol": 1e-12}


def assert_same_rows(actual: pd.DataFrame, expected: pd.DataFrame, **tolerance: Any) -> None:
    """Same columns and rows in the same order: every non-float column exactly equal (ids,
    codes, positions, methods), every float column (scores, probabilities) within
    ``tolerance`` (default ``FLOAT32_ACROSS``).

    >>> a = pd.DataFrame({"patient_id": ["p0"], "score": [0.6414578557014465]})
    >>> b = pd.DataFrame({"patient_id": ["p0"], "score": [0.6414579153060913]})
    >>> assert_same_rows(a, b)
    """
    tolerance = tolerance or FLOAT32_ACROSS
    assert list(actual.columns) == list(expected.columns)
    assert len(actual) == len(expected), f"{len(actual)} rows, expected {len(expected)}"
    floats = [c for c in expected.columns if pd.api.types.is_float_dtype(expected[c])]
    exact = [c for c in expected.columns if c not in floats]
    pd.testing.assert_frame_equal(actual[exact], expected[exact])
    for column in floats:
        np.testing.assert_allclose(
            actual[column].to_numpy(dtype=float),
            expected[column].to_numpy(dtype=float),
            err_msg=f"column {column!r}",
            equal_nan=True,
            **tolerance,
        )
