"""The built-in transformer: token ids in, classes out; exact attention, independent examples, OIP, DP-SGD."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from securemodel.data.tokens import TOPICS, read_token_dataset
from securemodel.models import (
    ModelBuildError,
    ModelRecord,
    ModelSpec,
    build_model,
    dump_fp32,
    load_predictor,
)
from securemodel.models.architectures import SelfAttention
from securemodel.serving import oip
from securemodel.workers.bookkeeping import unsupported_layers
from securemodel.workers.dpsgd import DPSGDConfig, clipping_mode_for, train_dp_sgd

torch.set_num_threads(1)  # the unit tests share two cores with everything else

SMALL = ModelSpec("transformer", params={"vocabulary": 64, "width": 16, "heads": 2, "layers": 1, "hidden": 32})


def test_token_ids_of_any_numeric_dtype_give_one_logit_per_class() -> None:
    torch.manual_seed(0)
    model = build_model(ModelSpec("transformer"), (12,), 5)
    ids = torch.randint(0, 256, (4, 12))
    logits = model(ids)
    assert logits.shape == (4, 5)
    torch.testing.assert_close(model(ids.float()), logits)
    assert clipping_mode_for(model) == "bookkeeping" and unsupported_layers(model) == []


@pytest.mark.parametrize(
    ("ids", "message"), [([[0.5, 1.0]], "whole numbers"), ([[3, 256]], r"\[0, 256\)"), ([[-1, 2]], "lie in")]
)
def test_anything_but_token_ids_is_refused(ids: list[list[float]], message: str) -> None:
    model = build_model(ModelSpec("transformer"), (2,), 3)
    with pytest.raises(ValueError, match=message):
        model(torch.tensor(ids))


def test_the_shape_must_be_a_sequence() -> None:
    with pytest.raises(ModelBuildError, match=r"samples of shape \(length,\)"):
        build_model(ModelSpec("transformer"), (8, 8), 3)
    with pytest.raises(ModelBuildError, match="not divisible by heads"):
        build_model(ModelSpec("transformer", params={"width": 10, "heads": 4}), (8,), 3)


def test_attention_is_softmax_of_scaled_query_key_products_applied_to_values() -> None:
    torch.manual_seed(1)
    attention, x = SelfAttention(8, heads=2), torch.randn(3, 5, 8)
    q, k, v = attention.qkv(x).split(8, dim=-1)
    heads = [slice(0, 4), slice(4, 8)]
    mixed = torch.cat(
        [torch.softmax(q[..., h] @ k[..., h].transpose(1, 2) / math.sqrt(4), dim=-1) @ v[..., h] for h in heads], dim=-1
    )
    torch.testing.assert_close(attention(x), attention.out(mixed), rtol=1e-5, atol=1e-6)


def test_examples_do_not_influence_each_other() -> None:
    # DP-SGD's per-example clipping is only meaningful if example i's output depends on example i alone.
    torch.manual_seed(2)
    model = build_model(SMALL, (10,), 4)
    batch = torch.randint(0, 64, (6, 10))
    other = batch.clone()
    other[1:] = torch.randint(0, 64, (5, 10))
    torch.testing.assert_close(model(batch)[0], model(other)[0])
    torch.testing.assert_close(model(batch)[0], model(batch[:1])[0])


def test_served_over_oip_with_int64_token_ids() -> None:
    torch.manual_seed(3)
    module = build_model(SMALL, (10,), 4)
    record = ModelRecord.from_module(SMALL, module, (10,), 4, None)
    predictor = load_predictor(dump_fp32(record), "topics")
    ids = np.random.default_rng(0).integers(0, 64, (3, 10))
    body = {"inputs": [{"name": oip.INPUT, "datatype": "INT64", "shape": [3, 10], "data": ids.flatten().tolist()}]}

    request = oip.parse_infer_request(body, predictor, max_batch=8)
    probabilities = predictor.predict_proba(request.batch)

    with torch.no_grad():
        expected = torch.softmax(module.eval()(torch.from_numpy(ids)), dim=1).numpy()
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-7)
    response = oip.infer_response(predictor, request, probabilities)
    assert [o["name"] for o in response["outputs"]] == [oip.PROBABILITIES, oip.PREDICTED_CLASS]


def test_the_topics_dataset_is_fixed_balanced_and_learnable_by_counting() -> None:
    x, y, classes = read_token_dataset("topics")
    again, _, _ = read_token_dataset("topics")
    assert np.array_equal(x, again) and x.dtype == np.float32 and classes == 4
    assert x.shape == (TOPICS.examples, TOPICS.length) and 0 <= x.min() and x.max() < TOPICS.vocabulary
    assert np.all(x == np.round(x)) and np.bincount(y).min() > 0.2 * len(y)
    counts = np.stack([((x >= 32 + 8 * c) & (x < 40 + 8 * c)).sum(1) for c in range(4)], axis=1)
    assert 0.8 < (counts.argmax(1) == y).mean() < 0.95  # the documented, imperfect, signal


def test_dp_sgd_trains_the_transformer_on_topics_well_above_chance() -> None:
    x, y, classes = read_token_dataset("topics")
    held_out = 819
    torch.manual_seed(0)
    model = build_model(SMALL, (TOPICS.length,), classes)
    dp = DPSGDConfig(
        noise_multiplier=1.0, sample_rate=0.05, steps=100, max_grad_norm=1.0, learning_rate=0.03, optimizer="adam"
    )

    report = train_dp_sgd(model, x[held_out:], y[held_out:], dp, device=torch.device("cpu"))

    assert report.clipping_mode == "bookkeeping"
    with torch.no_grad():
        accuracy = (model(torch.from_numpy(x[:held_out])).argmax(1).numpy() == y[:held_out]).mean()
    assert accuracy > 0.5  # chance is 0.25; ~0.64 measured
