"""`python manage.py bench_engine [--json FILE]`: the avatar engine against the naive way.

One run, one model (AVATAR_MODEL, the packaged default unless set), the demo hunt's avatars:

- naive baseline: transformers' plain `generate`, one request at a time, every turn resending
  the whole conversation (what a pay-per-token API client does);
- the engine at 1, 4 and 16 concurrent streams: aggregate tokens/s, time to first token (TTFT)
  p50/p95 and inter-token latency p50/p95. Each stream is a conversation that already has six
  exchanges behind it and plays three more turns, one after the other (closed loop); every turn
  produces exactly TOKENS tokens in both systems, so tokens/s compare equal work. Between two
  turns the engine's side does what the generation task does after a reply: it folds the
  oldest turns into the rolling summary once they no longer fit, and after a fold warms the
  next prompt's prefix while the player reads (`fold_and_warm`). Before each level the prefix
  cache is emptied and the avatars' persona prefixes are warmed, as on a worker that has
  served these avatars before, but not these conversations: each first turn prefills its
  history. The highest level runs once more with the histories cached as well (what
  conversation affinity gives), and the 4-stream level once more with the prefix cache off,
  to show what prefix reuse buys;
- a 40-turn conversation: prompt tokens and TTFT at turns 1, 10 and 40, naive (whole history)
  and engine (persona, rolling summary, recent turns within AVATAR_PROMPT_BUDGET). Between two
  turns the engine gets the player's reading time to prefill the next prompt's prefix, as the
  generation task does after each reply (`warm`). The same prompts' TTFT without any prefix
  reuse is measured too;
- peak memory of the process.

It prints a table with the ratios the acceptance goals name and writes JSON.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import threading
import time
from dataclasses import replace
from pathlib import Path

import torch
from django.conf import settings
from django.core.management.base import BaseCommand

from avatars.engine import prompts, summary
from avatars.engine.cleaning import ReplyCleaner
from avatars.engine.engine import Completion, Engine, Request, Sampling
from avatars.engine.loading import load_model, set_threads
from avatars.engine.prompts import PromptParts, Turn

DEMO = Path(settings.BASE_DIR) / "demo" / "lost-wallet.json"
TOKENS = 64  # tokens per turn in the throughput runs
CONVERSATION_TOKENS = 48  # longest reply in the 40-turn conversation
SAMPLING = {"temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.15}

PLAYER_LINES = [
    "Hello there! Who are you?",
    "My name is Ada and I come from the harbour town.",
    "What is it like to live up here on the cliff?",
    "How long have you kept this light?",
    "Do you ever get lonely at night?",
    "Tell me about your cat.",
    "What kind of tea do you drink?",
    "Have you ever seen a shipwreck from here?",
    "What do sailors ask you about most?",
    "Is the weather going to turn tonight?",
    "What do you do when a storm comes?",
    "Did anyone ever try to take your job?",
    "What did you do before you kept the light?",
    "Do you have family in the village?",
    "What is the best thing about the sea?",
    "And the worst thing?",
    "How many steps are there to the top of the tower?",
    "Do you remember the name of the first ship you saved?",
    "What do you eat up here?",
    "Who brings you supplies?",
    "Have you heard of the lost wallet everyone is looking for?",
    "Do many strangers come up here?",
    "What do you think of people in a hurry?",
    "Can you teach me a sea song?",
    "What does the wind sound like in winter?",
    "Do you keep a logbook?",
    "What was the strangest thing you ever found on the beach?",
    "Do you believe in sea monsters?",
    "What would you do if the light went out?",
    "Have you ever been off this cliff for long?",
    "Does your cat like the storms too?",
    "Which season do you like best?",
    "What advice would you give a young keeper?",
    "Do you remember my name?",
    "Where did I say I come from?",
    "What do you think about computers?",
    "Is there a secret in this lighthouse?",
    "Would you tell me a story about the old days?",
    "I have to go soon. Any last words of wisdom?",
    "Goodbye, and thank you for the tea!",
]
CANNED_REPLIES = [
    "Steady now, I keep the light and the light keeps me. Not much else to it.",
    "Mind the rocks on the way up, they bite. Tea is on the stove if you want some.",
    "Fifty years, give or take a storm. The sea never lets you count properly.",
    "Barnacle keeps me company, and the gulls gossip enough for ten.",
]


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


class Command(BaseCommand):
    help = "Benchmark the avatar engine against plain generate (see the module docstring)."

    def add_arguments(self, parser):
        parser.add_argument("--json", help="write the results to this file")
        parser.add_argument("--turns", type=int, default=40, help="turns of the conversation")
        parser.add_argument(
            "--threads",
            type=int,
            default=settings.AVATAR_THREADS,
            help="CPU threads for torch (default AVATAR_THREADS; 0: one per core)",
        )
        parser.add_argument(
            "--streams",
            default="1,4,16",
            help="comma-separated concurrency levels (default 1,4,16)",
        )
        parser.add_argument(
            "--skip-conversation",
            action="store_true",
            help="only the naive baseline and the throughput levels (a quicker run)",
        )
        parser.add_argument(
            "--compare-generate-batch",
            action="store_true",
            help="also run transformers' continuous batching (generate_batch) on the same "
            "model and prompts (meant for a GPU: AVATAR_DEVICE=cuda, bf16)",
        )
        parser.add_argument(
            "--trace",
            help="write the engine's per-step trace of the highest level to this JSON file",
        )

    def handle(self, *args, **options):
        started = time.monotonic()
        set_threads(options["threads"])
        demo = json.loads(DEMO.read_text())
        context = prompts.hunt_context(demo["title"], demo["description"])
        self.avatars = [
            PromptParts(persona=a["persona"], greeting=a["greeting"], hunt_context=context)
            for a in demo["avatars"][:4]
        ]
        self.loaded = load_model()
        self.tokenizer = self.loaded.tokenizer
        self.budget = prompts.prompt_budget()
        results: dict = {
            "model": self.loaded.name,
            "device": str(self.loaded.device),
            "dtype": str(self.loaded.dtype).removeprefix("torch."),
            "torch_threads": torch.get_num_threads(),
            "load_average_at_start": round(os.getloadavg()[0], 2),
            "prompt_budget": self.budget,
            "tokens_per_turn": TOKENS,
        }
        self.stdout.write(f"model {self.loaded.name} on {self.loaded.device}, {results['dtype']}")

        results.update(self.naive_throughput())
        levels = sorted({int(n) for n in options["streams"].split(",")})
        engine = Engine(
            self.loaded,
            max_batch=max(16, settings.AVATAR_MAX_BATCH),
            prefill_chunk=settings.AVATAR_PREFILL_CHUNK,
        )
        try:
            for streams in levels:
                if options["trace"] and streams == levels[-1]:
                    engine.trace = []
                results.update(self.engine_throughput(engine, streams))
            if engine.trace is not None:
                self.write_trace(Path(options["trace"]), engine.trace)
                engine.trace = None
            # The same highest level with each conversation's history already cached.
            results.update(
                self.engine_throughput(engine, levels[-1], "_warm_history", warm_histories=True)
            )
            if options["compare_generate_batch"]:
                results.update(self.generate_batch(levels[-1]))
            if not options["skip_conversation"]:
                capacity = engine.prefix_cache.capacity_tokens
                engine.prefix_cache.capacity_tokens = 0
                results.update(self.engine_throughput(engine, 4, suffix="_no_prefix_cache"))
                engine.prefix_cache.capacity_tokens = capacity
                cold = Engine(self.loaded, max_batch=1, prefix_cache_tokens=0)
                try:
                    results.update(self.conversation(engine, cold, options["turns"]))
                finally:
                    cold.close()
        finally:
            engine.close()
        results["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        if torch.cuda.is_available():
            results["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        results["runtime_s"] = round(time.monotonic() - started, 1)
        self.report(results)
        if options["json"]:
            path = Path(options["json"])
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(results, indent=2) + "\n")
            self.stdout.write(f"wrote {path}")

    # Workloads -----------------------------------------------------------------------------

    def history(self, index: int, exchanges: int = 6) -> tuple[Turn, ...]:
        """A canned history, different for each conversation index."""
        turns = []
        for i in range(exchanges):
            turns.append(Turn("player", PLAYER_LINES[(index * 3 + i) % len(PLAYER_LINES)]))
            turns.append(Turn("avatar", CANNED_REPLIES[(index + i) % len(CANNED_REPLIES)]))
        return tuple(turns)

    def next_line(self, index: int, turn: int) -> str:
        return PLAYER_LINES[(index * 3 + 6 + turn) % len(PLAYER_LINES)]

    def naive_ids(self, parts: PromptParts) -> list[int]:
        """The whole conversation, no budget, no summary."""
        messages = [{"role": "system", "content": prompts.system_text(parts)}]
        messages += [{"role": prompts.ROLES[t.role], "content": t.text} for t in parts.turns]
        messages.append({"role": "user", "content": parts.message})
        return list(
            self.tokenizer.apply_chat_template(
                messages, tokenize=True, add_generation_prompt=True, return_dict=False
            )
        )

    def naive_generate(self, ids: list[int], new_tokens: int, exact: bool) -> tuple[str, float]:
        """Plain transformers generate; returns (text, seconds)."""
        model = self.loaded.model
        input_ids = torch.tensor([ids], device=self.loaded.device)
        begin = time.monotonic()
        with torch.inference_mode():
            output = model.generate(
                input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens if exact else 0,
                do_sample=True,
                temperature=SAMPLING["temperature"],
                top_p=SAMPLING["top_p"],
                repetition_penalty=SAMPLING["repetition_penalty"],
                pad_token_id=self.tokenizer.pad_token_id,
            )
        seconds = time.monotonic() - begin
        return self.tokenizer.decode(output[0, len(ids) :], skip_special_tokens=True), seconds

    def naive_throughput(self, conversations: int = 3, turns: int = 2) -> dict:
        self.stdout.write("naive baseline: plain generate, one request at a time ...")
        tokens = 0
        begin = time.monotonic()
        for index in range(conversations):
            parts = replace(self.avatars[index % len(self.avatars)], turns=self.history(index))
            for turn in range(turns):
                parts = replace(parts, message=self.next_line(index, turn))
                text, _seconds = self.naive_generate(self.naive_ids(parts), TOKENS, exact=True)
                tokens += TOKENS
                parts = replace(
                    parts,
                    turns=(*parts.turns, Turn("player", parts.message), Turn("avatar", text)),
                )
        seconds = time.monotonic() - begin
        return {"naive_tok_s": round(tokens / seconds, 2), "naive_requests": conversations * turns}

    def warm_personas(self, engine: Engine) -> None:
        engine.clear_prefix_cache()
        for parts in self.avatars:
            prompt = prompts.build_prompt(self.tokenizer, parts, self.budget)
            engine.warm(prompts.prefix_ids(self.tokenizer, parts, prompt)).result()

    def engine_throughput(
        self, engine: Engine, streams: int, suffix: str = "", warm_histories: bool = False
    ) -> dict:
        self.stdout.write(f"engine: {streams} concurrent streams{suffix} ...")
        conversations = max(streams, 2)
        turns = 3
        self.warm_personas(engine)
        if warm_histories:
            # As the generation task leaves a conversation on the worker that served it
            # (warm_next_turn after each reply; affinity routes the next turn there): its
            # next prompt, up to the player's new message, is in the prefix cache.
            for index in range(conversations):
                parts = replace(
                    self.avatars[index % len(self.avatars)],
                    turns=self.history(index),
                    message=self.next_line(index, 0),
                )
                prompt = prompts.build_prompt(self.tokenizer, parts, self.budget)
                engine.warm(prompts.prefix_ids(self.tokenizer, parts, prompt)).result()
        completions: list[Completion] = []
        lock = threading.Lock()

        def play(index: int) -> None:
            parts = replace(self.avatars[index % len(self.avatars)], turns=self.history(index))
            for turn in range(turns):
                parts = replace(parts, message=self.next_line(index, turn))
                prompt = prompts.build_prompt(self.tokenizer, parts, self.budget)
                sampling = Sampling(
                    max_new_tokens=TOKENS,
                    min_new_tokens=TOKENS,
                    seed=index * 100 + turn,
                    **SAMPLING,
                )
                completion = engine.submit(Request(prompt.ids, sampling)).result()
                with lock:
                    completions.append(completion)
                parts = replace(
                    parts,
                    turns=(
                        *parts.turns,
                        Turn("player", parts.message),
                        Turn("avatar", completion.text),
                    ),
                )
                parts, _folded = self.fold_and_warm(engine, parts)

        gates = []
        begin = time.monotonic()
        # `streams` conversations in flight at once; with fewer streams than conversations the
        # rest wait for a free slot.
        slots = threading.Semaphore(streams)

        def run(index: int) -> None:
            with slots:
                play(index)

        for index in range(conversations):
            thread = threading.Thread(target=run, args=(index,))
            thread.start()
            gates.append(thread)
        for thread in gates:
            thread.join()
        seconds = time.monotonic() - begin
        tokens = sum(len(c.token_ids) for c in completions)
        ttfts = [c.ttft for c in completions if c.ttft is not None]
        waits = [c.queue_wait for c in completions if c.queue_wait is not None]
        gaps = [
            later - earlier
            for c in completions
            for earlier, later in zip(c.token_times, c.token_times[1:], strict=False)
        ]
        key = f"@{streams}{suffix}"
        return {
            f"engine_tok_s{key}": round(tokens / seconds, 2),
            f"engine_ttft_p50{key}": round(percentile(ttfts, 0.5), 3),
            f"engine_ttft_p95{key}": round(percentile(ttfts, 0.95), 3),
            f"engine_queue_wait_p50{key}": round(percentile(waits, 0.5), 3),
            f"engine_queue_wait_p95{key}": round(percentile(waits, 0.95), 3),
            f"engine_queue_wait_max{key}": round(max(waits), 3),
            f"engine_itl_p50{key}": round(percentile(gaps, 0.5), 4),
            f"engine_itl_p95{key}": round(percentile(gaps, 0.95), 4),
            f"engine_requests{key}": len(completions),
            f"engine_cached_share{key}": round(
                sum(c.cached_tokens for c in completions)
                / max(1, sum(c.prompt_tokens for c in completions)),
                3,
            ),
        }

    def fold_and_warm(
        self, engine: Engine, parts: PromptParts, timings: list[float] | None = None
    ) -> tuple[PromptParts, int]:
        """What the generation task does after storing a reply (turns.fold_summary, then
        warm_next_turn): once the turns no longer fit, folds the oldest into the summary, with
        hysteresis, and prefills the next prompt's new prefix while the player reads. Returns
        the next turn's parts and how many turns were folded; `timings` gets the fold plan's
        milliseconds."""
        begin = time.perf_counter()
        new_summary, folded = summary.plan_fold(self.tokenizer, parts, self.budget)
        if timings is not None:
            timings.append((time.perf_counter() - begin) * 1000)
        if not folded:
            return parts, 0
        parts = replace(parts, summary=new_summary, turns=parts.turns[folded:])
        prompt = prompts.build_prompt(self.tokenizer, parts, self.budget)
        engine.warm(prompts.prefix_ids(self.tokenizer, parts, prompt)).result()
        return parts, folded

    def generate_batch(self, streams: int) -> dict:
        """transformers' own continuous batching on the first-turn prompts of `streams`
        conversations, all submitted at once (an open burst, not the engine levels' closed
        loop of three turns each), TOKENS tokens each, same sampling settings."""
        from transformers import GenerationConfig

        self.stdout.write(f"transformers generate_batch: {streams} prompts at once ...")
        inputs = []
        for index in range(streams):
            parts = replace(
                self.avatars[index % len(self.avatars)],
                turns=self.history(index),
                message=self.next_line(index, 0),
            )
            inputs.append(list(prompts.build_prompt(self.tokenizer, parts, self.budget).ids))
        config = GenerationConfig(
            max_new_tokens=TOKENS,
            min_new_tokens=TOKENS,
            do_sample=True,
            temperature=SAMPLING["temperature"],
            top_p=SAMPLING["top_p"],
            repetition_penalty=SAMPLING["repetition_penalty"],
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        model = self.loaded.model
        # Continuous batching accepts transformers' own implementations only (on CPU this
        # model runs the engine's sdpa_gqa, see loading.attention_for).
        engine_attention = model.config._attn_implementation
        model.set_attn_implementation("sdpa")
        try:
            outputs = model.generate_batch(inputs, generation_config=config, record_timestamps=True)
        finally:
            model.set_attn_implementation(engine_attention)
        # Timed from the requests' creation to the last token: each call first warms up
        # (sizes its paged cache, captures CUDA graphs), which is not serving time.
        first = min(o.created_time for o in outputs.values())
        last = max(o.timestamps[-1] for o in outputs.values() if o.timestamps)
        seconds = last - first
        tokens = sum(len(o.generated_tokens) for o in outputs.values())
        ttfts = [o.timestamps[0] - o.created_time for o in outputs.values() if o.timestamps]
        key = f"@{streams}"
        return {
            f"generate_batch_tok_s{key}": round(tokens / seconds, 2),
            f"generate_batch_ttft_p50{key}": round(percentile(ttfts, 0.5), 3) if ttfts else None,
            f"generate_batch_ttft_p95{key}": round(percentile(ttfts, 0.95), 3) if ttfts else None,
            f"generate_batch_requests{key}": len(outputs),
        }

    def conversation(self, engine: Engine, cold: Engine, turns: int) -> dict:
        self.stdout.write(f"a {turns}-turn conversation, naive and engine ...")
        avatar = self.avatars[0]
        self.warm_personas(engine)
        stored: list[Turn] = []  # every turn, as the database would hold them
        summary_text, window = "", 0  # summary and index of the first unsummarised turn
        marks = {1, 10, turns}
        results: dict = {}
        ttfts, folds, fold_ms = [], 0, []
        for turn in range(1, turns + 1):
            line = PLAYER_LINES[(turn - 1) % len(PLAYER_LINES)]
            parts = replace(
                avatar, summary=summary_text, turns=tuple(stored[window:]), message=line
            )
            prompt = prompts.build_prompt(self.tokenizer, parts, self.budget)
            sampling = Sampling(max_new_tokens=CONVERSATION_TOKENS, seed=turn, **SAMPLING)
            stream = engine.submit(Request(prompt.ids, sampling))
            cleaner = ReplyCleaner(
                echo_sources=(avatar.persona, avatar.hunt_context, summary_text),
                instructions=(prompts.STYLE,),
            )
            text = "".join(cleaner.feed(chunk) for chunk in stream)
            completion = stream.result()
            text += cleaner.finish(complete=completion.finish_reason == "stop")
            ttfts.append(completion.ttft)
            if turn in marks:
                naive_parts = replace(avatar, turns=tuple(stored), message=line)
                naive_ids = self.naive_ids(naive_parts)
                _text, naive_ttft = self.naive_generate(naive_ids, 1, exact=True)
                results[f"naive_prompt_tokens@turn{turn}"] = len(naive_ids)
                results[f"naive_ttft@turn{turn}"] = round(naive_ttft, 3)
                results[f"engine_prompt_tokens@turn{turn}"] = prompt.tokens
                results[f"engine_ttft@turn{turn}"] = round(completion.ttft, 3)
                results[f"engine_cached_tokens@turn{turn}"] = completion.cached_tokens
                once = Sampling(temperature=0, max_new_tokens=1)
                results[f"engine_ttft@turn{turn}_no_prefix_cache"] = round(
                    cold.submit(Request(prompt.ids, once)).result().ttft, 3
                )
            stored += [Turn("player", line), Turn("avatar", text)]
            nxt, folded = self.fold_and_warm(
                engine,
                replace(avatar, summary=summary_text, turns=tuple(stored[window:])),
                fold_ms,
            )
            if folded:
                folds += 1
                summary_text, window = nxt.summary, window + folded
        results.update(
            {
                "engine_ttft_mean_all_turns": round(statistics.mean(ttfts), 3),
                "engine_ttft_max_all_turns": round(max(ttfts), 3),
                "summary_folds": folds,
                "summary_plan_ms_mean": round(statistics.mean(fold_ms), 2),
                "summary_tokens_final": prompts.count_tokens(self.tokenizer, summary_text),
            }
        )
        return results

    def write_trace(self, path: Path, trace: list[dict]) -> None:
        """The engine's steps, times relative to the first, with a one-line digest."""
        origin = trace[0]["t"] if trace else 0.0
        steps = [{**step, "t": round(step["t"] - origin, 4)} for step in trace]
        prefill = sum(s["prefill_s"] for s in steps)
        decode = sum(s["decode_s"] for s in steps)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(steps) + "\n")
        self.stdout.write(
            f"trace: {len(steps)} steps, prefill {prefill:.1f} s, decode {decode:.1f} s, "
            f"most waiting {max((s['waiting'] for s in steps), default=0)}; wrote {path}"
        )

    # Report --------------------------------------------------------------------------------

    def report(self, r: dict) -> None:
        def ratio(a: str, b: str) -> float | None:
            return round(r[a] / r[b], 2) if r.get(a) and r.get(b) else None

        r["ratio_engine16_over_naive"] = ratio("engine_tok_s@16", "naive_tok_s")
        r["ratio_ttft_p95_over_p50@16"] = ratio("engine_ttft_p95@16", "engine_ttft_p50@16")
        r["ratio_ttft_p95_over_p50@16_warm_history"] = ratio(
            "engine_ttft_p95@16_warm_history", "engine_ttft_p50@16_warm_history"
        )
        r["ratio_engine16_warm_history_over_naive"] = ratio(
            "engine_tok_s@16_warm_history", "naive_tok_s"
        )
        r["ratio_prompt_turn40_over_turn10"] = ratio(
            "engine_prompt_tokens@turn40", "engine_prompt_tokens@turn10"
        )
        r["ratio_engine_ttft_turn40_over_turn1"] = ratio("engine_ttft@turn40", "engine_ttft@turn1")
        r["ratio_naive_ttft_turn40_over_turn1"] = ratio("naive_ttft@turn40", "naive_ttft@turn1")
        w = self.stdout.write
        w("")
        w(
            f"{'throughput':<34}{'tok/s':>9}{'TTFT p50':>10}{'TTFT p95':>10}{'ITL p50':>9}"
            f"{'wait p50':>10}{'wait p95':>10}"
        )
        w(f"{'naive (generate, 1 at a time)':<34}{r['naive_tok_s']:>9}")
        for key in sorted(
            k.removeprefix("engine_tok_s") for k in r if k.startswith("engine_tok_s")
        ):
            if f"engine_tok_s{key}" in r:
                w(
                    f"{'engine ' + key[1:].replace('_', ' ') + ' streams':<34}"
                    f"{r[f'engine_tok_s{key}']:>9}{r[f'engine_ttft_p50{key}']:>10}"
                    f"{r[f'engine_ttft_p95{key}']:>10}{r[f'engine_itl_p50{key}']:>9}"
                    f"{r[f'engine_queue_wait_p50{key}']:>10}{r[f'engine_queue_wait_p95{key}']:>10}"
                )
        w("")
        w(f"{'conversation':<22}{'turn 1':>16}{'turn 10':>16}{'turn 40':>16}")
        rows = (
            ("naive prompt tokens", "naive_prompt_tokens@turn{}"),
            ("engine prompt tokens", "engine_prompt_tokens@turn{}"),
            ("naive TTFT s", "naive_ttft@turn{}"),
            ("engine TTFT s", "engine_ttft@turn{}"),
            ("  without prefix reuse", "engine_ttft@turn{}_no_prefix_cache"),
        )
        for label, key in rows:
            cells = [r.get(key.format(n)) for n in (1, 10, 40)]
            w(f"{label:<22}" + "".join(f"{c!s:>16}" for c in cells))
        w("")
        goals = (
            ("engine tok/s @16 / naive tok/s", "ratio_engine16_over_naive", ">= 6 (8)"),
            ("engine TTFT p95 / p50 @16", "ratio_ttft_p95_over_p50@16", "<= 2"),
            ("  the same, histories cached", "ratio_ttft_p95_over_p50@16_warm_history", "<= 2"),
            ("  tok/s / naive, histories cached", "ratio_engine16_warm_history_over_naive", ">= 6"),
            ("prompt tokens turn 40 / turn 10", "ratio_prompt_turn40_over_turn10", "<= 1.25"),
            ("engine TTFT turn 40 / turn 1", "ratio_engine_ttft_turn40_over_turn1", "<= 1.5"),
            ("naive TTFT turn 40 / turn 1", "ratio_naive_ttft_turn40_over_turn1", "grows"),
        )
        for label, key, goal in goals:
            w(f"{label:<36}{r.get(key)!s:>8}   goal {goal}")
        w(f"peak memory {r['peak_rss_mb']} MB, runtime {r['runtime_s']} s")
