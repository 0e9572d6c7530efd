"""Fine-tuning the avatar model on the product's own data, with TRL and PEFT (LoRA).

Data (`snapshot`), from the product itself:
- the avatars' example dialogues (`Avatar.examples`, written by organizers and creators):
  replies to imitate;
- players' thumbs on replies: unpaired good and bad replies;
- replies the system knows are bad: out of character by the fixed markers
  (`cleaning.out_of_character`), cut by the reply guard, empty, or cut off mid-sentence;
- better replies organizers wrote in place of rated ones (`BetterReply`): preference pairs.

Each example is the prompt the avatar is served with (`turns.avatar_parts`: persona, greeting,
the examples that fit, the hunt's public context) and the visitor's message, then the reply.
No guarded word ever enters training data: reveal turns are left out, and so is any example
whose text holds a guarded word of any hunt (a player may repeat a word they found).

Methods: `sft` imitates the good replies; `kto` learns from good and bad ones, unpaired (the
thumbs); `dpo` from preference pairs. `auto` takes DPO with enough pairs, else KTO with enough
good and bad replies, else SFT.

A run (`train`) freezes its data into `var/training/<version>/data.jsonl` (the counts and the
file's SHA-256 go on the version), trains LoRA adapters on the parent version's model within a
step and time budget, and merges them into a new model folder under
`var/models/versions/<version>/`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from avatars.engine import prompts
from avatars.engine.cleaning import looks_cut, out_of_character
from avatars.engine.loading import models_dir
from avatars.models import Avatar, BetterReply, Feedback, Message, ModelVersion

logger = logging.getLogger(__name__)

METHODS = ("sft", "kto", "dpo")
# What `auto` needs before it prefers a method that learns from bad replies too.
MIN_PAIRS = 8
MIN_KTO_EACH = 8
# The recipe: LoRA on every linear layer of the model; a constant learning rate suits runs of
# a few hundred steps. KTO's loss is scaled by its beta (0.1), so it gets SFT's rate to move the
# model within a CPU budget of steps (bench_tuning); DPO keeps the usual 5e-5 (not measured
# here: the demo has no organizer pairs).
DEFAULTS = {
    "steps": 60,
    "seconds": 0,  # 0: no time budget
    "seed": 0,
    "batch_size": 4,
    "lora_r": 16,
    "lora_alpha": 32,
    "learning_rate": {"sft": 2e-4, "kto": 2e-4, "dpo": 5e-5},
    "beta": 0.1,
}
# Known-bad replies worth learning from, at most: the newest are kept.
MAX_KNOWN_BAD = 2000


@dataclass
class Example:
    """One training example: a prompt (chat messages), a reply, and whether the reply is
    good. A preference pair also has the reply it is preferred to (`rejected`)."""

    avatar_id: int
    source: str  # example, thumbs, known-bad, better
    prompt: list[dict]
    completion: str
    good: bool
    rejected: str | None = None  # a pair's worse reply (which may be empty)

    def texts(self) -> list[str]:
        return [m["content"] for m in self.prompt] + [self.completion, self.rejected or ""]


@dataclass
class Snapshot:
    method: str
    rows: list[dict]
    counts: dict[str, int] = field(default_factory=dict)

    def manifest(self, path: Path, digest: str) -> dict:
        return {
            "method": self.method,
            "rows": len(self.rows),
            "counts": self.counts,
            "file": str(path),
            "sha256": digest,
            "taken_at": timezone.now().isoformat(),
        }


def _system(avatar: Avatar) -> dict:
    """The system message the avatar is served with (examples fitted as in every turn)."""
    from avatars.turns import avatar_parts

    parts = prompts.fit_examples(prompts.default_tokenizer(), avatar_parts(avatar, avatar.hunt))
    return {"role": "system", "content": prompts.system_text(parts)}


def _user(text: str) -> dict:
    return {"role": "user", "content": text}


def playing_avatars():
    """The avatars whose persona training serves: published live avatars (not a creator's
    working copy)."""
    return Avatar.objects.filter(published=True, revision_of__isnull=True).select_related("hunt")


def example_dialogues(avatar: Avatar) -> list[Example]:
    """Every avatar line of the avatar's example dialogues, after the exchange so far."""
    system = _system(avatar)
    out = []
    for exchange in prompts.example_exchanges(avatar.prompt_text(avatar.examples)):
        history: list[dict] = []
        for turn in prompts.exchange_turns(exchange):
            role = prompts.ROLES[turn.role]
            if role == "assistant" and history and history[-1]["role"] == "user":
                out.append(Example(avatar.pk, "example", [system, *history], turn.text, True))
            history.append({"role": role, "content": turn.text})
    return out


def _played_replies():
    """Stored replies of real play (no sandbox), less two kinds of turns: reveal turns (a
    reply to a message that opened a clue holds its word), and turns the reply guard cut
    (the stored text is the guard's stand-in, not what the model wrote, which held a word)."""
    from hunt.models import Discovery, Incident

    reveal_turns = Discovery.objects.filter(message__isnull=False).values("message_id")
    guarded_turns = Incident.objects.filter(
        kind=Incident.Kind.GUARD, message_id__isnull=False
    ).values("message_id")
    return (
        Message.objects.filter(
            role=Message.Role.AVATAR,
            status=Message.Status.DONE,
            conversation__sandbox=False,
            reply_to__isnull=False,
        )
        .exclude(reply_to_id__in=reveal_turns)
        .exclude(reply_to_id__in=guarded_turns)
        .select_related("reply_to", "conversation__avatar__hunt")
    )


def rated_replies(avatars: dict[int, Avatar]) -> list[Example]:
    """Replies players rated, one example each: good when the thumbs add up above zero."""
    from django.db.models import Sum

    sums = dict(
        Feedback.objects.filter(avatar_id__in=avatars)
        .values_list("message_id")
        .annotate(total=Sum("value"))
        .exclude(total=0)
    )
    out = []
    for reply in _played_replies().filter(pk__in=sums):
        avatar = avatars[reply.conversation.avatar_id]
        prompt = [_system(avatar), _user(reply.reply_to.text)]
        out.append(Example(avatar.pk, "thumbs", prompt, reply.text, sums[reply.pk] > 0))
    return out


def known_bad_replies(avatars: dict[int, Avatar]) -> list[Example]:
    """Replies the system knows are bad, whatever players said of them: out of character,
    empty, or cut off mid-sentence."""
    out = []
    replies = _played_replies().filter(conversation__avatar_id__in=avatars).order_by("-id")
    for reply in replies.iterator(chunk_size=500):
        if len(out) >= MAX_KNOWN_BAD:
            break
        text = reply.text.strip()
        if text and not out_of_character(text) and not looks_cut(text):
            continue
        avatar = avatars[reply.conversation.avatar_id]
        prompt = [_system(avatar), _user(reply.reply_to.text)]
        out.append(Example(avatar.pk, "known-bad", prompt, text, False))
    return out


def better_replies(avatars: dict[int, Avatar]) -> list[Example]:
    rows = BetterReply.objects.filter(message__in=_played_replies()).select_related(
        "message__reply_to", "message__conversation"
    )
    out = []
    for better in rows:
        reply = better.message
        avatar = avatars.get(reply.conversation.avatar_id)
        if avatar is None:
            continue
        prompt = [_system(avatar), _user(reply.reply_to.text)]
        out.append(Example(avatar.pk, "better", prompt, better.text, True, rejected=reply.text))
    return out


def collect_examples() -> tuple[list[Example], int]:
    """Every example of every source, and how many were left out for holding a guarded
    word."""
    from hunt.leaks import find_guarded_words
    from hunt.models import SeedWord

    avatars = {a.pk: a for a in playing_avatars()}
    found = [
        *(e for a in avatars.values() for e in example_dialogues(a)),
        *rated_replies(avatars),
        *known_bad_replies(avatars),
        *better_replies(avatars),
    ]
    words = sorted({w.reveal_word() for w in SeedWord.objects.all() if w.has_word})
    clean = [e for e in found if not find_guarded_words("\n".join(e.texts()), words)]
    return clean, len(found) - len(clean)


def choose_method(examples: list[Example]) -> str:
    pairs = sum(1 for e in examples if e.rejected is not None)
    good = sum(1 for e in examples if e.good)
    if pairs >= MIN_PAIRS:
        return "dpo"
    if good >= MIN_KTO_EACH and len(examples) - good >= MIN_KTO_EACH:
        return "kto"
    return "sft"


def _assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def dataset_rows(examples: list[Example], method: str) -> list[dict]:
    """TRL's conversational formats: prompt-completion (SFT), with a label (KTO), or
    prompt-chosen-rejected (DPO). A pair counts in KTO as one good and one bad reply."""
    if method == "dpo":
        return [
            {
                "prompt": e.prompt,
                "chosen": _assistant(e.completion),
                "rejected": _assistant(e.rejected),
            }
            for e in examples
            if e.rejected is not None
        ]
    if method == "sft":
        return [
            {"prompt": e.prompt, "completion": _assistant(e.completion)} for e in examples if e.good
        ]
    rows = []
    for e in examples:
        rows.append({"prompt": e.prompt, "completion": _assistant(e.completion), "label": e.good})
        if e.rejected is not None:
            rows.append({"prompt": e.prompt, "completion": _assistant(e.rejected), "label": False})
    return rows


def snapshot(method: str = "auto") -> Snapshot:
    examples, dropped = collect_examples()
    if method == "auto":
        method = choose_method(examples)
    rows = dataset_rows(examples, method)
    counts = {
        f"{source}_{'good' if good else 'bad'}": 0
        for source in ("example", "thumbs", "known-bad", "better")
        for good in (True, False)
    }
    for e in examples:
        counts[f"{e.source}_{'good' if e.good else 'bad'}"] += 1
    counts = {k: v for k, v in counts.items() if v}
    counts["pairs"] = sum(1 for e in examples if e.rejected is not None)
    counts["left_out_guarded"] = dropped
    return Snapshot(method, rows, counts)


def training_dir(version: ModelVersion) -> Path:
    return Path(settings.VAR_DIR) / "training" / version.name


def version_folder(name: str) -> Path:
    return models_dir() / "versions" / name


def freeze(snap: Snapshot, version: ModelVersion) -> dict:
    """Writes the snapshot's rows as JSON lines (the run's frozen data) and returns its
    manifest: method, counts, file and SHA-256."""
    folder = training_dir(version)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "data.jsonl"
    body = "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in snap.rows)
    path.write_text(body, encoding="utf-8")
    manifest = snap.manifest(path, hashlib.sha256(body.encode()).hexdigest())
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return manifest


class TrainingError(Exception):
    """A run that cannot start (no data for the method) or failed; the message says why."""


def train(version: ModelVersion, on_step: Callable[[int, int], None] | None = None,
          show_bar: bool = False) -> ModelVersion:  # fmt: skip
    """Trains `version` (status training, with its parent and config set) and stores the
    result: the model folder, the data manifest and the run's metrics; status candidate.
    `on_step(done, total)` reports progress."""
    config = {**DEFAULTS, **version.config}
    snap = snapshot(config.get("method", "auto"))
    if not snap.rows:
        raise TrainingError(
            f"no training data for {snap.method}: write example dialogues for the avatars, or "
            "collect feedback first"
        )
    manifest = freeze(snap, version)
    version.method = snap.method
    version.data = manifest
    version.save(update_fields=["method", "data"])
    started = time.monotonic()
    metrics = fit(
        version.parent.folder, snap, config, version_folder(version.name), on_step, show_bar
    )
    metrics["seconds"] = round(time.monotonic() - started, 1)
    version.folder = str(version_folder(version.name))
    version.metrics = metrics
    version.status = ModelVersion.Status.CANDIDATE
    version.save(update_fields=["folder", "metrics", "status"])
    logger.info(
        "trained %s (%s, %s steps) in %.0fs",
        version,
        snap.method,
        metrics["steps"],
        metrics["seconds"],
    )
    return version


def fit(parent: str, snap: Snapshot, config: dict, final: Path,
        on_step: Callable[[int, int], None] | None, show_bar: bool) -> dict:  # fmt: skip
    """LoRA training of the model `parent` on the snapshot; the merged model is published
    at `final`. Returns the run's metrics."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    from avatars.engine.loading import _publish, _tmp_dir, dtype_for, model_folder, resolve_device

    device = resolve_device()
    folder = model_folder(parent)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        folder, dtype=dtype_for(device), local_files_only=True
    )
    method = snap.method
    steps = int(config["steps"])
    seconds = float(config["seconds"] or 0)

    class Budget(TrainerCallback):
        """Stops at the time budget; reports each step."""

        def __init__(self):
            self.started = time.monotonic()
            self.step_seconds: list[float] = []
            self.last = self.started

        def on_step_end(self, args, state, control, **kwargs):
            now = time.monotonic()
            self.step_seconds.append(now - self.last)
            self.last = now
            if on_step is not None:
                on_step(state.global_step, steps)
            if seconds and now - self.started >= seconds:
                control.should_training_stop = True

    budget = Budget()
    common = {
        "output_dir": str(final.parent / f".{final.name}.trainer"),
        "max_steps": steps,
        "per_device_train_batch_size": int(config["batch_size"]),
        "learning_rate": float(
            config["learning_rate"][method]
            if isinstance(config["learning_rate"], dict)
            else config["learning_rate"]
        ),
        "lr_scheduler_type": "constant",
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "seed": int(config["seed"]),
        "data_seed": int(config["seed"]),
        "use_cpu": device.type == "cpu",
        "bf16": device.type == "cuda",
        "disable_tqdm": not show_bar,
        "max_length": settings.AVATAR_PROMPT_BUDGET + settings.AVATAR_MAX_NEW_TOKENS,
        "dataloader_num_workers": 0,
    }
    if method == "sft":
        from trl import SFTConfig as Config
        from trl import SFTTrainer as Trainer
    elif method == "kto":
        from trl import KTOConfig as Config
        from trl import KTOTrainer as Trainer

        common["beta"] = float(config["beta"])
        # Unbalanced data (few bad replies, many good) is weighted back to even, as the KTO
        # paper advises.
        good = sum(1 for r in snap.rows if r["label"])
        bad = len(snap.rows) - good
        if good and bad:
            common["undesirable_weight"] = min(4.0, max(1.0, good / bad))
            common["desirable_weight"] = min(4.0, max(1.0, bad / good))
    else:
        from trl import DPOConfig as Config
        from trl import DPOTrainer as Trainer

        common["beta"] = float(config["beta"])
    torch.manual_seed(int(config["seed"]))
    trainer = Trainer(
        model=model,
        args=Config(**common),
        train_dataset=Dataset.from_list(snap.rows),
        processing_class=tokenizer,
        peft_config=LoraConfig(
            r=int(config["lora_r"]),
            lora_alpha=int(config["lora_alpha"]),
            lora_dropout=0.0,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        ),
        callbacks=[budget],
    )
    result = trainer.train()
    losses = [round(e["loss"], 4) for e in trainer.state.log_history if "loss" in e]
    merged = trainer.model.merge_and_unload()
    merged.to(torch.float32)
    tmp = _tmp_dir(final)
    merged.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(final, ignore_errors=True)
    _publish(tmp, final)
    shutil.rmtree(common["output_dir"], ignore_errors=True)
    timed = budget.step_seconds[1:] or budget.step_seconds
    return {
        "method": method,
        "steps": trainer.state.global_step,
        "device": device.type,
        "train_loss": round(result.training_loss, 4),
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "seconds_per_step": round(sum(timed) / len(timed), 3) if timed else None,
        "stopped_by_time": bool(seconds) and trainer.state.global_step < steps,
    }
