"""The example of "Adding a method" in docs/ARCHITECTURE.md runs as written and gives the
scores it describes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from ehrlens.data import create_sample_dataset, generate_cohort, get_dataloader
from ehrlens.interpret import METHODS, unregister_method
from ehrlens.models import Transformer

DOC = Path(__file__).resolve().parents[1] / "docs" / "ARCHITECTURE.md"


def section(title: str) -> str:
    """The text of the ``## title`` section, up to the next ``## `` heading."""
    text = DOC.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


@pytest.fixture
def namespace():
    cohort = generate_cohort(n_patients=16, layout="nested", seed=8, include_labs=True)
    dataset = create_sample_dataset(cohort.samples, cohort.input_schema, cohort.output_schema)
    torch.manual_seed(0)
    model = Transformer(dataset, embedding_dim=8, heads=2, num_layers=2, dropout=0.0).eval()
    batch = next(iter(get_dataloader(dataset, batch_size=16)))
    yield {"model": model, "dataset": dataset, "batch": batch}
    if "layer_attention_max" in METHODS:
        unregister_method("layer_attention_max")


def test_the_example_registers_a_method_that_works_by_name(namespace):
    blocks = re.findall(r"```python\n(.*?)```", section("Adding a method"), flags=re.DOTALL)
    assert len(blocks) == 2
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)
    assert METHODS["layer_attention_max"].cls is namespace["LayerAttentionMax"]

    # reference: layer 0's [CLS] row over the inputs, max over heads, through the capture
    # interface only; padded codes 0, each step of a time series gets its step's score
    model, batch = namespace["model"], namespace["batch"]
    model.set_attention_hooks(True, capture_gradients=False)
    with torch.no_grad():
        model(**batch)
    layers = model.get_attention_layers()
    model.set_attention_hooks(False)
    for key, maps in layers.items():
        row = maps[0][0][:, :, 0, 1:].amax(dim=1)  # [batch, n_inputs]
        values = batch[key]
        if values.is_floating_point():
            expected = row[..., None] * batch["masks"][key][..., None].to(row.dtype)
            expected = expected.expand(values.shape)
        else:
            expected = row[..., None] * (values != 0)
        torch.testing.assert_close(namespace["scores"][key], expected, atol=1e-6, rtol=0)
    frame = namespace["frame"]
    assert set(frame["method"]) == {"rollout", "layer_attention_max"}
    assert len(frame[frame["method"] == "rollout"]) == len(frame) // 2
