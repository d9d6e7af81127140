"""Random-code models of any length, for the benchmarks."""

import torch

from ehrlens.app.random_models import random_code_batch, random_code_transformer


def test_random_code_model_takes_any_length_and_batch():
    model = random_code_transformer(num_layers=2, embedding_dim=16, heads=2, vocab_size=50)
    batch = random_code_batch(model, batch_size=3, seq=40, seed=1)
    assert batch["codes"].shape == (3, 40)
    assert int(batch["codes"].min()) >= 2  # never padding or unknown
    assert torch.equal(batch["codes"], random_code_batch(model, 3, 40, seed=1)["codes"])
    with torch.inference_mode():
        assert model(**batch)["logit"].shape == (3, 1)
