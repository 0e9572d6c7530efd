"""The avatar model as the clue gate's second stage (GATE_VERIFIER=judge, hunt/verifiers.py).

A short yes/no prompt holding the player's sentence and one right question (never the word),
greedy, and the margin of the logits of "yes" over "no" at the answer's first token, squashed to
0..1. Meant for workers running a capable local model on a GPU; with the default 135M model it is
measured (`bench_gate --verifier judge`) and reported as it is.
"""

from __future__ import annotations

import math
import threading
from functools import cache

from hunt.verifiers import Verifier

PROMPT = (
    "Do these two questions ask for the same piece of information? Answer yes or no.\n"
    "Question A: {sentence}\nQuestion B: {question}"
)

_lock = threading.Lock()


@cache
def _judge():
    import torch

    from avatars.engine.loading import load_model

    loaded = load_model()
    tokenizer = loaded.tokenizer

    def first_token(word: str) -> list[int]:
        return sorted({tokenizer.encode(w, add_special_tokens=False)[0] for w in (word, " " + word,
                       word.capitalize(), " " + word.capitalize())})  # fmt: skip

    return loaded, torch, first_token("yes"), first_token("no")


class JudgeVerifier(Verifier):
    name = "judge"
    yes_at = 0.6
    no_under = 0.4

    def scores(self, sentence, questions):
        with _lock:
            loaded, torch, yes_ids, no_ids = _judge()
        out = []
        for question in questions:
            messages = [{"role": "user", "content": PROMPT.format(sentence=sentence,
                                                                  question=question)}]  # fmt: skip
            ids = loaded.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt"
            ).to(loaded.device)
            with torch.inference_mode():
                logits = loaded.model(ids).logits[0, -1].float()
            margin = float(logits[yes_ids].max() - logits[no_ids].max())
            out.append(1 / (1 + math.exp(-margin)))
        return out
