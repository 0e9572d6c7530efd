"""int8 matrix products for CPU workers (`AVATAR_MODEL=<model>+int8`, avatars/engine/quantize.py):
rows that do not depend on their neighbours, and a model name that says it."""

from __future__ import annotations

import pytest
import torch
from django.core.exceptions import ImproperlyConfigured
from torch import nn

from avatars.engine import loading
from avatars.engine.engine import Engine
from avatars.engine.quantize import Int8Linear

pytest_plugins = ["tests.engine_support"]

QUESTIONS = ["Hello there!", "What is your cat called?", "How long have you kept the light?"]


@pytest.fixture(scope="module")
def tiny_int8():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield loading.load_model("tiny-random+int8", "cpu")
    torch.set_num_threads(threads)


def test_an_int8_row_does_not_depend_on_the_rows_beside_it():
    torch.manual_seed(0)
    layer = Int8Linear(nn.Linear(64, 48))
    rows = torch.randn(6, 64)
    rows[3] *= 50  # one loud row: a scale shared by the batch would squash the others
    together = layer(rows)
    alone = torch.cat([layer(rows[i : i + 1]) for i in range(6)])
    assert torch.equal(together, alone)


def test_an_int8_layer_stays_close_to_its_float_original():
    torch.manual_seed(0)
    linear = nn.Linear(256, 128)
    x = torch.randn(8, 256)
    exact = linear(x).detach()
    error = (Int8Linear(linear)(x) - exact).norm() / exact.norm()
    assert error < 0.02


def test_the_int8_suffix_loads_the_same_folder_with_every_linear_layer_in_int8(tiny_int8):
    assert loading.model_folder("tiny-random+int8") == loading.model_folder("tiny-random")
    assert (tiny_int8.name, tiny_int8.int8) == ("tiny-random+int8", True)
    layers = list(tiny_int8.model.modules())
    assert not any(type(m) is nn.Linear for m in layers)
    assert sum(isinstance(m, Int8Linear) for m in layers) == 2 * 7 + 1  # 2 layers, and the head


def test_an_int8_model_gives_a_prompt_the_same_tokens_alone_and_in_a_batch(tiny_int8, ask):
    engine = Engine(tiny_int8)
    try:
        alone = [engine.submit(ask(q)).result().token_ids for q in QUESTIONS]
        streams = [engine.submit(ask(q)) for q in QUESTIONS]
        together = [s.result().token_ids for s in streams]
    finally:
        engine.close()
    assert together == alone
    assert all(alone)


def test_int8_is_refused_on_a_gpu(monkeypatch):
    monkeypatch.setattr(loading, "resolve_device", lambda _device=None: torch.device("cuda"))
    with pytest.raises(ImproperlyConfigured, match="int8 is for CPU workers"):
        loading.load_model("tiny-random+int8")
