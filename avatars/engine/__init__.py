"""The avatar model and its batching engine (issue 3).

- loading.py: `AVATAR_MODEL` / `AVATAR_DEVICE` to a loaded model (GGUF conversion, cache).
- engine.py: `Engine`, the background batching loop; `submit(Request) -> Stream`.
- prompts.py: persona-first prompts within a token budget; `check_persona_fits`.
- summary.py: the rolling summary of older turns.
- cleaning.py: streaming reply clean-up.

`get_engine(model)` is the process-wide engine: the model is loaded once per process, on first
use (or at worker start, see avatars/tasks.py). Asked for another model (the active model
version changed, avatars/versions.py), it loads that one for the next turns and retires the old
engine, which finishes the turns it holds and then closes: no restart, no dropped turn.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading

from django.conf import settings

logger = logging.getLogger(__name__)

_engine = None
_engine_pid: int | None = None
_lock = threading.Lock()


def get_engine(model: str | None = None):
    """The engine of this process for `model` (a packaged model's name or a model folder;
    default `AVATAR_MODEL`), created on first call. Asked for another model, it loads that one
    and retires the engine it replaces (see module doc). Turns ask with the active version's
    model, so a promotion reaches every worker at its next turn."""
    global _engine, _engine_pid
    model = model or settings.AVATAR_MODEL
    with _lock:
        if _engine is not None and _engine_pid != os.getpid():
            # Inherited through a fork: its thread did not come along. Start afresh.
            logger.warning("avatar engine inherited through fork; loading a new one")
            _engine = None
        if _engine is not None and _engine.loaded.name != model:
            logger.info("switching the avatar model from %s to %s", _engine.loaded.name, model)
            _engine.retire()
            _engine = None
        if _engine is None:
            from avatars.engine.engine import Engine
            from avatars.engine.loading import load_model, set_threads

            set_threads(settings.AVATAR_THREADS)
            _engine = Engine(
                load_model(model),
                max_batch=settings.AVATAR_MAX_BATCH,
                prefill_chunk=settings.AVATAR_PREFILL_CHUNK,
                prefix_cache_tokens=settings.AVATAR_PREFIX_CACHE_TOKENS,
            )
            _engine_pid = os.getpid()
        return _engine


@atexit.register
def _close_at_exit() -> None:
    # Stop the loop before the interpreter tears torch down under it. (The current engine
    # only: a retired one closes itself, and a reference kept here would keep its model.)
    if _engine is not None:
        _engine.close()


def reset_engine() -> None:
    """Closes the process-wide engine (tests switching models; shutdown)."""
    global _engine
    with _lock:
        if _engine is not None:
            _engine.close()
        _engine = None
