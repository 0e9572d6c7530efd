"""Model loading: device and dtype selection, offline model names, the converted cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from django.core.exceptions import ImproperlyConfigured

from avatars.engine import loading
from tests.conftest import ROOT


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def fake_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


def test_auto_uses_the_cpu_in_float32_without_a_gpu(no_cuda):
    device = loading.resolve_device("auto")
    assert (device.type, loading.dtype_for(device)) == ("cpu", torch.float32)


def test_auto_takes_the_gpu_in_bfloat16_when_there_is_one(fake_cuda):
    device = loading.resolve_device("auto")
    assert (device.type, loading.dtype_for(device)) == ("cuda", torch.bfloat16)


def test_asking_for_cuda_without_a_gpu_is_a_clear_configuration_error(no_cuda):
    with pytest.raises(ImproperlyConfigured, match="AVATAR_DEVICE=cuda but no CUDA device"):
        loading.resolve_device("cuda")


def test_cpu_can_be_forced_on_a_gpu_host(fake_cuda):
    assert loading.resolve_device("cpu").type == "cpu"


def test_the_device_comes_from_the_setting(settings, no_cuda):
    settings.AVATAR_DEVICE = "cuda"
    with pytest.raises(ImproperlyConfigured):
        loading.resolve_device()
    settings.AVATAR_DEVICE = "cpu"
    assert loading.resolve_device().type == "cpu"


def test_an_unknown_device_is_refused():
    with pytest.raises(ImproperlyConfigured, match="auto, cpu or cuda"):
        loading.resolve_device("tpu")


def test_a_hub_name_is_refused_instead_of_downloaded():
    with pytest.raises(ImproperlyConfigured, match="hub names are never downloaded"):
        loading.model_folder("HuggingFaceTB/SmolLM2-135M-Instruct")


def test_the_packaged_gguf_is_found_without_importing_its_package():
    path = loading.gguf_path(loading.DEFAULT_MODEL)
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.stat().st_size > 50_000_000


def test_the_tiny_model_loads_with_a_chat_template_and_end_of_turn_tokens():
    loaded = loading.load_model("tiny-random", "cpu")
    tokenizer = loaded.tokenizer
    assert tokenizer.chat_template
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in loaded.stop_ids
    assert loaded.model.config.num_hidden_layers == 2
    assert not loaded.model.training
    assert next(loaded.model.parameters()).dtype == torch.float32


def test_a_local_model_folder_is_accepted_as_the_model_name():
    folder = loading.model_folder("tiny-random")
    loaded = loading.load_model(str(folder), "cpu")
    assert loaded.name == str(folder)
    assert loaded.model.config.hidden_size == 64


def test_a_model_folder_without_a_chat_template_is_refused(tmp_path):
    folder = loading.model_folder("tiny-random")
    for item in folder.iterdir():
        (tmp_path / item.name).write_bytes(item.read_bytes())
    (tmp_path / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ImproperlyConfigured, match="no chat template"):
        loading.load_model(str(tmp_path), "cpu")


def test_a_second_converter_losing_the_race_leaves_the_first_ones_folder(tmp_path):
    final = tmp_path / "model"
    final.mkdir()
    (final / "config.json").write_text("{}")
    loser = loading._tmp_dir(final)
    (loser / "config.json").write_text('{"loser": true}')
    loading._publish(loser, final)
    assert not loser.exists()
    assert (final / "config.json").read_text() == "{}"


@pytest.mark.model
def test_the_default_model_is_converted_once_into_safetensors_matching_the_gguf():
    from gguf import GGUFReader, dequantize

    folder = loading.model_folder(loading.DEFAULT_MODEL)
    assert (folder / "model.safetensors").is_file()
    assert (folder / "tokenizer.json").is_file()
    loaded = loading.load_model(loading.DEFAULT_MODEL, "cpu")
    # An independent check of the conversion: the embedding table dequantised straight from
    # the GGUF file with the gguf package equals the converted weights.
    reader = GGUFReader(loading.gguf_path(loading.DEFAULT_MODEL))
    tensor = next(t for t in reader.tensors if t.name == "token_embd.weight")
    expected = torch.from_numpy(dequantize(tensor.data, tensor.tensor_type).copy())
    actual = loaded.model.get_input_embeddings().weight
    assert torch.equal(actual, expected.reshape(actual.shape).to(actual.dtype))
    # Tied output projection, as in the original model.
    assert loaded.model.lm_head.weight.data_ptr() == actual.data_ptr()


def heavy_modules_of_the_web_tier(code: str = "pass") -> str:
    """Which of torch, transformers and numpy a fresh process holds after importing the ASGI
    application and running `code`."""
    code = (
        f"import sys, django; django.setup(); import lostwallet.asgi; {code}; "
        "print(sorted({'torch', 'transformers', 'numpy'} & set(sys.modules)))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "lostwallet.settings"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def test_the_web_tier_serves_without_importing_torch():
    """Daphne imports the consumers, which enqueue turns through avatars.tasks; torch (about
    240 MB of memory) belongs to the workers only."""
    assert heavy_modules_of_the_web_tier() == "[]"


def test_the_web_tier_counts_a_players_tokens_without_importing_torch():
    """Every say is counted in tokens (CHAT_MAX_TOKENS) by Daphne itself."""
    code = "from avatars.engine import prompts; assert prompts.message_tokens('Hello!') > 1"
    assert heavy_modules_of_the_web_tier(code) == "[]"
