"""The batching engine: one model per process, many conversations at once.

A background thread owns the model and runs a loop; any thread submits a request and reads its
own stream of tokens. Each turn of the loop:

1. admits waiting requests (in the order of avatars/engine/scheduling.py: replies before
   warm-ups, oldest first, none passed by more than MAX_OVERTAKES later arrivals) and runs one
   prefill forward pass over several prompts together, padded to the same width, within
   `prefill_chunk` tokens of padded work: a long prompt stalls the running streams for one
   chunk only, and a burst of short ones (a cached conversation's new message is a few dozen
   tokens) costs one pass, not one pass each;
2. runs one decode step for every running stream together: a padded batch whose key/value
   cache lives in preallocated buffers written in place (growing transformers' DynamicCache
   by concatenation copied the whole cache every step: it was as slow as the matmuls at 16
   streams on CPU);
3. samples each stream's next token with its own settings and random generator.

A finished prompt joins the running batch between two steps (continuous batching), and a
finished stream leaves it at once, so nobody waits for the slowest reply of a batch.

Padding: rows are left-padded so that every stream writes its next key/value at the same
column. Each row keeps its own positions (0.. its real length) and the attention mask hides its
padding, so a stream's output does not depend on its neighbours (tests/test_engine_batching.py
checks greedy batched output against one-at-a-time output).

Prefix reuse: the key/values of finished streams (prompt plus reply) are kept in a small LRU
`PrefixCache` keyed by token ids (avatars/engine/kvcache.py, with the slab of a running batch).
A new prompt starts from the longest cached prefix: the persona and hunt context shared by every
conversation with an avatar, and, for the next turn of the same conversation, everything up to
the last reply. `bench_engine` measures what it saves.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from avatars.engine import scheduling
from avatars.engine.kvcache import CacheView, KVSlab, PrefixCache
from avatars.engine.loading import LoadedModel

logger = logging.getLogger(__name__)

NUCLEUS_CANDIDATES = 64


@dataclass(frozen=True)
class Sampling:
    """Per-request decoding settings. temperature 0 is greedy. With a seed, the same request
    gives the same reply; without, each reply draws fresh randomness."""

    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 96
    # End-of-turn tokens are masked until this many tokens were produced (benchmarks use it to
    # compare equal amounts of work).
    min_new_tokens: int = 0
    # Divides the logits of tokens this reply already produced (the prompt is not penalised:
    # the persona's words are the character's vocabulary).
    repetition_penalty: float = 1.0
    seed: int | None = None
    # Token sequences the reply may never complete: each sequence's last token is masked
    # wherever the reply so far ends with the rest of it (a single token: always). The
    # generation task bans the player's locked words as the tokenizer writes them
    # (turns.locked_sequences).
    banned: tuple[tuple[int, ...], ...] = ()

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


@dataclass(frozen=True)
class Request:
    """A prompt, already through the chat template (see prompts.build_prompt), and how to
    decode it. max_new_tokens=0 only prefills the prompt into the prefix cache (`warm`)."""

    prompt_ids: tuple[int, ...]
    sampling: Sampling = Sampling()


@dataclass
class Completion:
    """What a finished stream produced, with its timings (monotonic seconds)."""

    token_ids: list[int]
    text: str
    finish_reason: str  # "stop" (end of turn), "length", "cancelled" or "error"
    prompt_tokens: int
    cached_tokens: int  # prompt tokens whose key/values came from the prefix cache
    submitted_at: float
    token_times: list[float] = field(default_factory=list)
    # When the engine began its prefill (left the waiting queue); None if it never did.
    admitted_at: float | None = None
    # Steps at which the most likely next token was a banned one (Sampling.banned): how often
    # the model itself reached for a locked word.
    banned_hits: int = 0

    @property
    def ttft(self) -> float | None:
        return self.token_times[0] - self.submitted_at if self.token_times else None

    @property
    def queue_wait(self) -> float | None:
        """Seconds spent waiting for admission, before any of its prefill ran."""
        return None if self.admitted_at is None else self.admitted_at - self.submitted_at


class EngineError(RuntimeError):
    """The engine failed while serving this stream (the model raised)."""


_DONE = object()


class Stream:
    """One request's tokens, produced by the engine thread and read by one consumer thread.

    Iterating yields text chunks (the reply decoded so far, in increments; special tokens are
    never part of it); `result()` waits for the end and returns the Completion. `cancel()` may
    be called from any thread: the engine drops the request before its next step.
    """

    def __init__(self, engine: Engine, request: Request):
        self.request = request
        self.submitted_at = time.monotonic()
        self._engine = engine
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._cancelled = threading.Event()
        self._token_ids: list[int] = []
        self._token_times: list[float] = []
        self._text = ""
        self._finish: tuple[str, BaseException | None, int] | None = None
        self.admitted_at: float | None = None  # written once by the engine thread
        self.banned_hits = 0  # written by the engine thread before the stream finishes

    # Engine side (engine thread only) --------------------------------------------------------

    def _put_token(self, token_id: int) -> None:
        self._events.put((token_id, time.monotonic()))

    def _finish_with(self, reason: str, cached: int, error: BaseException | None = None) -> None:
        self._events.put((_DONE, (reason, error, cached)))

    # Consumer side -------------------------------------------------------------------------

    def cancel(self) -> None:
        self._cancelled.set()
        self._engine._wake.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def _next_event(self, timeout: float | None) -> bool:
        """Consumes one event; False once the stream is finished."""
        if self._finish is not None:
            return False
        try:
            item, payload = self._events.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError("the engine produced nothing in time") from None
        if item is _DONE:
            self._finish = payload
            return False
        self._token_ids.append(item)
        self._token_times.append(payload)
        return True

    def __iter__(self) -> Iterator[str]:
        return self.chunks()

    def chunks(self, timeout: float | None = None) -> Iterator[str]:
        """Text as it is produced. `timeout` bounds the wait for each token."""
        tokenizer = self._engine.tokenizer
        while self._next_event(timeout):
            text = tokenizer.decode(self._token_ids, skip_special_tokens=True)
            # A token can end inside a multi-byte character; wait for the rest of it.
            if text.endswith("\ufffd"):
                continue
            if len(text) > len(self._text) and text.startswith(self._text):
                chunk, self._text = text[len(self._text) :], text
                yield chunk
        self._raise_if_failed()
        text = tokenizer.decode(self._token_ids, skip_special_tokens=True)
        if len(text) > len(self._text) and text.startswith(self._text):
            chunk, self._text = text[len(self._text) :], text
            yield chunk

    def result(self, timeout: float | None = None) -> Completion:
        for _chunk in self.chunks(timeout):
            pass
        reason, _error, cached = self._finish
        return Completion(
            token_ids=list(self._token_ids),
            text=self._text,
            finish_reason=reason,
            prompt_tokens=len(self.request.prompt_ids),
            cached_tokens=cached,
            submitted_at=self.submitted_at,
            token_times=list(self._token_times),
            admitted_at=self.admitted_at,
            banned_hits=self.banned_hits,
        )

    def _raise_if_failed(self) -> None:
        reason, error, _cached = self._finish
        if reason == "error":
            raise EngineError(str(error)) from error

    @property
    def text(self) -> str:
        """The text yielded so far."""
        return self._text

    @property
    def cached_tokens(self) -> int | None:
        """Prompt tokens reused from the prefix cache; None until the iteration has ended."""
        return self._finish[2] if self._finish else None

    @property
    def finish_reason(self) -> str | None:
        """Why the stream ended ("stop", "length", "cancelled", "error"); None until the
        iteration has reached its end."""
        return self._finish[0] if self._finish else None


class _Sequence:
    """Engine-thread state of one request."""

    def __init__(self, stream: Stream, device, arrival: int):
        self.stream = stream
        sampling = stream.request.sampling
        self.sampling = sampling
        # For the admission order (scheduling.py).
        self.arrival = arrival
        self.replying = sampling.max_new_tokens > 0
        self.overtaken = 0
        self.prompt = torch.tensor(stream.request.prompt_ids, dtype=torch.long)
        self.fed: list[int] = list(stream.request.prompt_ids)  # tokens whose KV is computed
        self.generated: list[int] = []
        self.cached = 0
        self.start = 0  # first real column in the batch slab
        self.last_token: int | None = None
        self.generator: torch.Generator | None = None
        if not sampling.greedy:
            seed = sampling.seed if sampling.seed is not None else int.from_bytes(os.urandom(8))
            self.generator = torch.Generator(device=device)
            self.generator.manual_seed(seed % (2**63))
        self.private: KVSlab | None = None  # KV during prefill
        self.prefilled = 0
        # Sampling.banned as {length of what must precede the last token: {that: last
        # tokens}}: one lookup per length at each step, whatever the number of sequences.
        self.banned_after: dict[int, dict[tuple[int, ...], list[int]]] = {}
        for sequence in sampling.banned:
            if sequence:
                before = tuple(sequence[:-1])
                by_before = self.banned_after.setdefault(len(before), {})
                by_before.setdefault(before, []).append(sequence[-1])

    def banned_now(self) -> list[int]:
        """The tokens that would complete a banned sequence if sampled next."""
        out = []
        done = len(self.generated)
        for n, by_before in self.banned_after.items():
            if done >= n:
                out.extend(by_before.get(tuple(self.generated[done - n :]), ()))
        return out

    @property
    def position(self) -> int:
        return len(self.fed)

    @property
    def unfilled(self) -> int:
        """Prompt tokens whose key/values are still to compute."""
        return len(self.prompt) - self.prefilled


class Engine:
    """Owns a loaded model and serves requests from a background thread (see module doc)."""

    def __init__(
        self,
        loaded: LoadedModel,
        max_batch: int = 16,
        prefill_chunk: int = 256,
        prefix_cache_tokens: int = 12_000,
    ):
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.device = loaded.device
        self.stop_ids = loaded.stop_ids
        self._stop_index = torch.tensor(sorted(loaded.stop_ids), device=loaded.device)
        self.max_batch = max_batch
        self.prefill_chunk = prefill_chunk
        config = self.model.config
        self.prefix_cache = PrefixCache(prefix_cache_tokens)
        self._slab = KVSlab(
            config.num_hidden_layers,
            config.num_key_value_heads,
            getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads,
            loaded.dtype,
            loaded.device,
            row_limit=max_batch,
        )
        self._columns = 0  # filled columns of the batch slab
        self._running: list[_Sequence] = []  # row i of the slab is _running[i]
        self._waiting: list[_Sequence] = []
        self._arrivals = 0
        # Admitted, KV being computed, in admission order; each holds its prefix in a private
        # slab, gathered into _pass_slab for the pass that prefills them together.
        self._prefilling: list[_Sequence] = []
        self._pass_slab = KVSlab(*self._slab.shape, loaded.dtype, loaded.device, max_batch)
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        # (function, done event): work other threads hand to the engine thread, run between
        # two steps (the prefix cache and the slabs are the engine thread's alone).
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self._wake = threading.Event()
        self._closed = False
        # Set by `retire`: the loop closes the engine once nothing is left to serve.
        self._retiring = False
        # Race: a turn submitting at the moment a retiring loop finds its inbox empty; the
        # submit either lands before the loop looks (and is served) or finds the engine closed.
        self._submit_lock = threading.Lock()
        self.steps = 0
        self.decoded_tokens = 0
        # Set to a list to record one dict per busy turn of the loop (bench_engine --trace).
        self.trace: list[dict] | None = None
        self._thread = threading.Thread(target=self._loop, name="avatar-engine", daemon=True)
        self._thread.start()

    # Public API (any thread) ---------------------------------------------------------------

    def submit(self, request: Request) -> Stream:
        if not request.prompt_ids:
            raise ValueError("empty prompt")
        stream = Stream(self, request)
        with self._submit_lock:
            if self._closed:
                raise EngineError("the engine is closed")
            self._inbox.put(stream)
        self._wake.set()
        return stream

    def generate(self, prompt_ids, sampling: Sampling = Sampling()) -> Completion:
        """Submits and waits: a convenience for scripts and tests."""
        return self.submit(Request(tuple(prompt_ids), sampling)).result()

    def warm(self, prompt_ids) -> Stream:
        """Prefills `prompt_ids` into the prefix cache without generating (e.g. the next turn's
        prompt minus the player's message, while the player reads and types)."""
        return self.submit(Request(tuple(prompt_ids), Sampling(max_new_tokens=0)))

    def clear_prefix_cache(self) -> None:
        """Empties the prefix cache (a benchmark's cold start); returns once it is empty.

        Race: a stream's result arrives before the engine thread has stored the finished
        stream's key/values in the cache, so a caller clearing it directly could empty it in
        the middle of that store (a KeyError in the engine step, failing every stream in
        flight). The engine thread clears it between two steps instead."""
        done = threading.Event()
        self._calls.put((self.prefix_cache.clear, done))
        self._wake.set()
        while not done.wait(timeout=0.5):
            if not self._thread.is_alive():  # closed: nothing else touches the cache now
                self.prefix_cache.clear()
                return

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=30)

    def retire(self) -> None:
        """Closes the engine once the requests it holds are served, without waiting: another
        model takes the next turns (a promotion or rollback, avatars/versions.py) while the
        turns in flight here finish their replies."""
        self._retiring = True
        self._wake.set()

    def _idle(self) -> bool:
        return not (self._running or self._waiting or self._prefilling) and self._inbox.empty()

    def _close_if_retired(self) -> bool:
        if not self._retiring or not self._idle():
            return False
        with self._submit_lock:
            if not self._inbox.empty():
                return False
            self._closed = True
        return True

    # Engine thread -------------------------------------------------------------------------

    def _loop(self) -> None:
        torch.set_grad_enabled(False)
        while not self._closed:
            try:
                with torch.inference_mode():
                    busy = self._turn()
            except Exception as exc:  # a model error must not kill the thread for good
                logger.exception("engine step failed; failing the requests in flight")
                self._fail_all(exc)
                busy = False
            if not busy:
                if self._close_if_retired():
                    break
                self._wake.wait(timeout=0.5)
                self._wake.clear()
        self._fail_all(EngineError("the engine was closed"))
        # A retired model's cached prefixes go now, not when the last reference to it does.
        self.prefix_cache.clear()

    def _turn(self) -> bool:
        while True:
            try:
                call, done = self._calls.get_nowait()
            except queue.Empty:
                break
            try:
                call()
            finally:
                done.set()
        while True:
            try:
                stream = self._inbox.get_nowait()
                self._arrivals += 1
                self._waiting.append(_Sequence(stream, self.device, self._arrivals))
            except queue.Empty:
                break
        for seq in [s for s in self._waiting if s.stream.cancelled]:
            self._waiting.remove(seq)
            seq.stream._finish_with("cancelled", 0)
        for seq in [s for s in self._prefilling if s.stream.cancelled]:
            self._prefilling.remove(seq)
            seq.stream._finish_with("cancelled", seq.cached)
        for row in reversed(range(len(self._running))):
            if self._running[row].stream.cancelled:
                self._finish_row(row, "cancelled")
        worked = False
        began = time.monotonic()
        group = self._prefill_group()
        if group:
            self._prefill(group)
            worked = True
        prefill_tokens = sum(tokens for _seq, tokens in group)
        prefilled = time.monotonic()
        rows = len(self._running)
        if self._running:
            self._decode_step()
            worked = True
        if worked and self.trace is not None:
            self.trace.append(
                {
                    "t": began,
                    "prefill_tokens": prefill_tokens,
                    "prefill_rows": len(group),
                    "prefill_s": prefilled - began,
                    "decode_rows": rows,
                    "decode_s": time.monotonic() - prefilled,
                    "columns": self._columns,
                    "waiting": len(self._waiting),
                }
            )
        return worked

    def _fail_all(self, error: BaseException) -> None:
        for seq in [*self._running, *self._waiting, *self._prefilling]:
            seq.stream._finish_with("error", seq.cached, error)
        self._running, self._waiting, self._prefilling = [], [], []
        self._columns = 0
        self._slab.release()
        self._pass_slab.release()
        while True:
            try:
                self._inbox.get_nowait()._finish_with("error", 0, error)
            except queue.Empty:
                break

    # Prefill -------------------------------------------------------------------------------

    def _new_private_slab(self, columns: int) -> KVSlab:
        slab = KVSlab(*self._slab.shape, self._slab.dtype, self.device)
        slab.reserve(1, columns, 0, 0)
        return slab

    def _begin_prefill(self, seq: _Sequence) -> None:
        length = len(seq.prompt)
        seq.private = self._new_private_slab(length + 1)
        key, shared = self.prefix_cache.match(seq.prompt)
        # A generating request must compute at least its last prompt token (its logits give
        # the first reply token); a warm-up may reuse everything.
        shared = min(shared, length - (1 if seq.sampling.max_new_tokens else 0))
        if key is not None and shared > 0:
            _ids, keys, values = self.prefix_cache.get(key)
            for layer, (k, v) in enumerate(zip(keys, values, strict=True)):
                seq.private.keys[layer][0, :, :shared] = k[:, :shared]
                seq.private.values[layer][0, :, :shared] = v[:, :shared]
            self.prefix_cache.reused_tokens += shared
        seq.cached = seq.prefilled = shared
        if seq.unfilled == 0:  # a warm-up whose prompt is cached already
            seq.stream.admitted_at = time.monotonic()
            self._remember(seq.private, 0, 0, length, seq.prompt)
            seq.stream._finish_with("stop", seq.cached)
            return
        self._prefilling.append(seq)

    def _prefill_group(self) -> list[tuple[_Sequence, int]]:
        """This turn's prefill pass: (sequence, tokens to prefill) for each row.

        Rows are taken in admission order (those already admitted first, then waiting ones as
        the scheduler picks them). With k rows the pass is `width` tokens wide, width =
        min(longest unfilled prompt, prefill_chunk // k): padded work stays within the budget.
        k grows while it completes more prompts, or as many and prefills more tokens; so a
        burst of short prompts goes in one pass, a long one gets a whole chunk to itself, and
        its last tokens go along with the next prompts. A request admitted for a pass it then
        did not fit in goes first next turn.
        """
        best, best_score, best_width = 0, (0, 0), 0
        while True:
            rows = best + 1
            if rows > len(self._prefilling):
                if not self._waiting or len(self._running) + rows > self.max_batch:
                    break
                self._begin_prefill(scheduling.admit(self._waiting))
                continue  # a cached warm-up finishes at once and takes no row
            candidates = [s.unfilled for s in self._prefilling[:rows]]
            width = min(max(candidates), self.prefill_chunk // rows)
            if width == 0:
                break
            score = (
                sum(1 for n in candidates if n <= width),
                sum(min(n, width) for n in candidates),
            )
            if score <= best_score:
                break
            best, best_score, best_width = rows, score, width
        return [(s, min(s.unfilled, best_width)) for s in self._prefilling[:best]]

    def _prefill(self, group: list[tuple[_Sequence, int]]) -> None:
        """One forward pass over the next tokens of several prompts; finished prompts join the
        batch (or, warm-ups, go to the prefix cache).

        Each row's computed prefix is gathered right-aligned at column `start`, and its new
        tokens go at start.. (left padding before, right padding after a shorter chunk), so
        that the pass writes its key/values in one block. Each row keeps its own positions and
        the mask hides its padding, as in the decode batch: a prompt's key/values do not
        depend on the prompts beside it (tests/test_engine_batching.py).
        """
        now = time.monotonic()
        rows = len(group)
        start = max(seq.prefilled for seq, _n in group)
        width = max(n for _seq, n in group)
        device = self.device
        if rows == 1:
            slab = group[0][0].private  # its prefix ends at `start` already
        else:
            slab = self._pass_slab
            slab.reserve(rows, start + width, 0, 0)
            for row, (seq, _n) in enumerate(group):
                lead = start - seq.prefilled
                for mine, batch in (
                    (seq.private.keys, slab.keys),
                    (seq.private.values, slab.values),
                ):
                    for layer in range(len(mine)):
                        batch[layer][row, :, lead:start] = mine[layer][0, :, : seq.prefilled]
        ids = torch.zeros(rows, width, dtype=torch.long)
        for row, (seq, n) in enumerate(group):
            ids[row, :n] = seq.prompt[seq.prefilled : seq.prefilled + n]
            if seq.stream.admitted_at is None:
                seq.stream.admitted_at = now
        done = torch.tensor([seq.prefilled for seq, _n in group], device=device)
        steps = torch.arange(width, device=device)
        columns = torch.arange(start + width, device=device)
        # Row r, query j (column start+j) sees its own columns up to its own.
        mask = (columns[None, None, :] >= (start - done)[:, None, None]) & (
            columns[None, None, :] <= start + steps[None, :, None]
        )
        # The logits needed: the last prompt token of each reply whose prompt ends here.
        finishing = [
            (row, seq, n)
            for row, (seq, n) in enumerate(group)
            if n == seq.unfilled and seq.sampling.max_new_tokens
        ]
        keep = sorted({n - 1 for _row, _seq, n in finishing})
        out = self.model(
            input_ids=ids.to(device),
            attention_mask=mask[:, None],
            position_ids=done[:, None] + steps[None, :],
            cache=CacheView(slab, rows, start),
            use_cache=True,
            logits_to_keep=torch.tensor(keep, device=device) if keep else 1,
        )
        for row, (seq, n) in enumerate(group):
            if rows > 1:
                for mine, batch in (
                    (seq.private.keys, slab.keys),
                    (seq.private.values, slab.values),
                ):
                    for layer in range(len(mine)):
                        mine[layer][0, :, seq.prefilled : seq.prefilled + n] = batch[layer][
                            row, :, start : start + n
                        ]
            seq.prefilled += n
        for seq, _n in group:
            if seq.unfilled == 0:
                self._prefilling.remove(seq)
                if not seq.sampling.max_new_tokens:
                    self._remember(seq.private, 0, 0, len(seq.prompt), seq.prompt)
                    seq.stream._finish_with("stop", seq.cached)
        if not self._prefilling:
            self._pass_slab.release()
        if not finishing:
            return
        logits = torch.stack([out.logits[row, keep.index(n - 1)] for row, _seq, n in finishing])
        seqs = [seq for _row, seq, _n in finishing]
        for seq, token in zip(seqs, self._sample(logits, seqs).tolist(), strict=True):
            if self._emit(seq, token):
                self._remember(seq.private, 0, 0, len(seq.prompt), seq.prompt)
            else:
                self._join_batch(seq, token)

    def _join_batch(self, seq: _Sequence, token: int) -> None:
        """Moves a prefilled prompt into the running batch (left-padded to its columns)."""
        length = len(seq.prompt)
        rows = len(self._running)
        shift = max(0, length - self._columns)
        columns = self._columns + shift
        self._slab.reserve(rows + 1, columns + 1, rows, self._columns)
        if shift and rows:
            self._slab.shift_right(rows, self._columns, shift)
        for other in self._running:
            other.start += shift
        self._columns = columns
        seq.start = columns - length
        for layer in range(len(self._slab.keys)):
            self._slab.keys[layer][rows, :, : seq.start].zero_()
            self._slab.values[layer][rows, :, : seq.start].zero_()
            self._slab.keys[layer][rows, :, seq.start : columns] = seq.private.keys[layer][
                0, :, :length
            ]
            self._slab.values[layer][rows, :, seq.start : columns] = seq.private.values[layer][
                0, :, :length
            ]
        seq.private = None
        seq.last_token = token
        self._running.append(seq)

    # Decode --------------------------------------------------------------------------------

    def _decode_step(self) -> None:
        rows, at = len(self._running), self._columns
        self._slab.reserve(rows, at + 1, rows, at)
        device = self.device
        ids = torch.tensor([[s.last_token] for s in self._running], device=device)
        positions = torch.tensor([[s.position] for s in self._running], device=device)
        starts = torch.tensor([s.start for s in self._running], device=device)
        mask = (torch.arange(at + 1, device=device)[None, :] >= starts[:, None])[:, None, None, :]
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            cache=CacheView(self._slab, rows, at),
            use_cache=True,
        )
        self._columns = at + 1
        for seq in self._running:
            seq.fed.append(seq.last_token)
        tokens = self._sample(out.logits[:, -1, :], self._running).tolist()
        self.steps += 1
        self.decoded_tokens += rows
        for row in reversed(range(rows)):
            seq = self._running[row]
            if self._emit(seq, tokens[row]):
                self._finish_row(row, None)
            else:
                seq.last_token = tokens[row]

    def _emit(self, seq: _Sequence, token: int) -> bool:
        """Hands a sampled token to the stream; True when the sequence is finished (its
        Completion is then already sent)."""
        if token in self.stop_ids:
            seq.stream._finish_with("stop", seq.cached)
            return True
        seq.generated.append(token)
        seq.stream._put_token(token)
        if len(seq.generated) >= seq.sampling.max_new_tokens:
            seq.stream._finish_with("length", seq.cached)
            return True
        return False

    def _finish_row(self, row: int, reason: str | None) -> None:
        """Removes a row from the batch (its stream is told `reason` unless already told) and
        keeps its key/values in the prefix cache for the conversation's next turn."""
        seq = self._running[row]
        if reason is not None:
            seq.stream._finish_with(reason, seq.cached)
        fed = torch.tensor(seq.fed, dtype=torch.long)
        self._remember(self._slab, row, seq.start, self._columns, fed)
        last = len(self._running) - 1
        if row != last:
            # Keep rows contiguous: the last row moves into the hole.
            for layer in range(len(self._slab.keys)):
                self._slab.keys[layer][row, :, : self._columns] = self._slab.keys[layer][
                    last, :, : self._columns
                ]
                self._slab.values[layer][row, :, : self._columns] = self._slab.values[layer][
                    last, :, : self._columns
                ]
            self._running[row] = self._running[last]
        self._running.pop()
        self._compact()

    def _compact(self) -> None:
        """Drops padding columns no remaining row needs once they waste a quarter of the
        batch, and frees the buffers when the batch is empty."""
        if not self._running:
            self._columns = 0
            self._slab.release()
            return
        lead = min(s.start for s in self._running)
        if lead == 0 or (lead < 64 and lead * 4 < self._columns):
            return
        rows, width = len(self._running), self._columns - lead
        for buffers in (self._slab.keys, self._slab.values):
            for layer in range(len(buffers)):
                moved = buffers[layer][:rows, :, lead : self._columns].clone()
                buffers[layer][:rows, :, :width] = moved
        for seq in self._running:
            seq.start -= lead
        self._columns = width

    def _remember(self, slab: KVSlab, row: int, begin: int, end: int, ids: torch.Tensor) -> None:
        if self.prefix_cache.capacity_tokens <= 0:
            return
        assert end - begin == len(ids), (end - begin, len(ids))
        keys = [k[row, :, begin:end].clone() for k in slab.keys]
        values = [v[row, :, begin:end].clone() for v in slab.values]
        self.prefix_cache.put(ids, keys, values)

    # Sampling ------------------------------------------------------------------------------

    def _sample(self, logits: torch.Tensor, seqs: list[_Sequence]) -> torch.Tensor:
        """Next token per row: greedy rows take the argmax; others sample from the top-p
        nucleus of the temperature-scaled distribution with their own generator. A token that
        would complete one of the row's banned sequences is never chosen."""
        logits = logits.float()
        for row, seq in enumerate(seqs):
            if len(seq.generated) < seq.sampling.min_new_tokens:
                logits[row, self._stop_index] = float("-inf")
            penalty = seq.sampling.repetition_penalty
            if penalty != 1.0 and seq.generated:
                seen = torch.tensor(sorted(set(seq.generated)), device=logits.device)
                scores = logits[row, seen]
                logits[row, seen] = torch.where(scores > 0, scores / penalty, scores * penalty)
            # Last, so that a hit is what this reply's decoding would have picked otherwise.
            banned = seq.banned_now() if seq.banned_after else None
            if banned:
                if int(logits[row].argmax()) in banned:
                    seq.stream.banned_hits += 1
                logits[row, banned] = float("-inf")
        chosen = logits.argmax(dim=-1)
        sampled = [row for row, seq in enumerate(seqs) if not seq.sampling.greedy]
        if not sampled:
            return chosen
        index = torch.tensor(sampled, device=logits.device)
        temperature = torch.tensor(
            [seqs[row].sampling.temperature for row in sampled], device=logits.device
        )
        probs = torch.softmax(logits[index] / temperature[:, None], dim=-1)
        # The nucleus almost always lies within the few most likely tokens: a top-k is far
        # cheaper than sorting the whole vocabulary (170 ms -> 5 ms per step at 16 rows on
        # CPU). A row whose top-k does not reach top_p is sorted in full.
        top, top_ids = probs.topk(min(NUCLEUS_CANDIDATES, probs.shape[-1]), dim=-1)
        reach = top.cumsum(dim=-1)
        for i, row in enumerate(sampled):
            top_p = seqs[row].sampling.top_p
            if reach[i, -1] >= top_p:
                values, ids = top[i], top_ids[i]
            else:
                values, ids = probs[i].sort(descending=True)
            # The smallest set of most likely tokens whose mass reaches top_p (the most
            # likely token is always in).
            keep = (values.cumsum(dim=0) - values) < top_p
            chosen[row] = self._draw(ids[keep], values[keep], seqs[row].generator)
        return chosen

    @staticmethod
    def _draw(ids: torch.Tensor, weights: torch.Tensor, generator) -> torch.Tensor:
        """One token by inverse CDF over the candidates in vocabulary order, from one uniform
        draw. In vocabulary order, a tiny change of the probabilities (another batch, a cached
        prefix) moves the draw to another token only when it falls right on a boundary."""
        order = ids.argsort()
        ids, cdf = ids[order], weights[order].cumsum(dim=0)
        point = torch.rand((), generator=generator, device=cdf.device) * cdf[-1]
        return ids[torch.searchsorted(cdf, point).clamp(max=len(ids) - 1)]
