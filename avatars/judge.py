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

    def first_tokens(word: str) -> list[int]:
        """The ids a reply starting with the word may begin with (spaced, capitalised)."""
        forms = (word, " " + word, word.capitalize(), " " + word.capitalize())
        return sorted({tokenizer.encode(f, add_special_tokens=False)[0] for f in forms})

    return loaded, torch, first_tokens("yes"), first_tokens("no")


class JudgeVerifier(Verifier):
    name = "judge"
    yes_at = 0.6
    no_under = 0.4

    def scores(self, sentence, questions):
        with _lock:
            loaded, torch, yes_ids, no_ids = _judge()
        out = []
        for question in questions:
            prompt = PROMPT.format(sentence=sentence, question=question)
            messages = [{"role": "user", "content": prompt}]
            text = loaded.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False
            )
            batch = loaded.tokenizer(text, return_tensors="pt", add_special_tokens=False)
            ids = batch["input_ids"].to(loaded.device)
            with torch.inference_mode():
                logits = loaded.model(ids).logits[0, -1].float()
            margin = float(logits[yes_ids].max() - logits[no_ids].max())
            out.append(1 / (1 + math.exp(-margin)))
        return out
