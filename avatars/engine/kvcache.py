"""The engine's key/value memory: the preallocated slab a batch decodes into, the view through
which the model's attention layers write into it, and the prefix cache of finished streams.

Only the engine thread (avatars/engine/engine.py) touches these.
"""

from __future__ import annotations

from collections import OrderedDict

import torch


class PrefixCache:
    """Key/values of recent token sequences, least recently used first out.

    `match` finds the entry sharing the longest prefix with a prompt; the engine copies that
    many key/values instead of recomputing them. Entries hold one sequence each, per layer
    tensors of shape [kv_heads, length, head_dim]. Only the engine thread touches it.
    """

    def __init__(self, capacity_tokens: int):
        self.capacity_tokens = capacity_tokens
        self._entries: OrderedDict[int, tuple[torch.Tensor, list, list]] = OrderedDict()
        self._tokens = 0
        self._next_key = 0
        self.hits = 0
        self.lookups = 0
        self.reused_tokens = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def tokens(self) -> int:
        return self._tokens

    def match(self, ids: torch.Tensor) -> tuple[int | None, int]:
        """(entry key, shared prefix length) of the best entry, (None, 0) without one."""
        self.lookups += 1
        best_key, best_len = None, 0
        for key, (entry_ids, _k, _v) in self._entries.items():
            n = min(len(entry_ids), len(ids))
            if n <= best_len:
                continue
            same = entry_ids[:n] == ids[:n]
            shared = n if bool(same.all()) else int(same.to(torch.int8).argmin())
            if shared > best_len:
                best_key, best_len = key, shared
        if best_key is not None:
            self._entries.move_to_end(best_key)
            self.hits += 1
        return best_key, best_len

    def get(self, key: int) -> tuple[torch.Tensor, list, list]:
        return self._entries[key]

    def put(self, ids: torch.Tensor, keys: list, values: list) -> None:
        if len(ids) == 0 or len(ids) > self.capacity_tokens:
            return
        # An entry that is a prefix of the new one is now useless: drop it. (The opposite case,
        # a new sequence that is a prefix of a cached one, is not stored at all.)
        for key, (entry_ids, _k, _v) in list(self._entries.items()):
            n = min(len(entry_ids), len(ids))
            if bool((entry_ids[:n] == ids[:n]).all()):
                if len(entry_ids) >= len(ids):
                    self._entries.move_to_end(key)
                    return
                self._drop(key)
        self._entries[self._next_key] = (ids, keys, values)
        self._next_key += 1
        self._tokens += len(ids)
        while self._tokens > self.capacity_tokens:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: int) -> None:
        ids, _k, _v = self._entries.pop(key)
        self._tokens -= len(ids)

    def clear(self) -> None:
        self._entries.clear()
        self._tokens = 0


class CacheView:
    """What the model's attention layers see as their cache for one forward pass: writes the
    new key/values in place at column `at` of the first `rows` rows and returns the filled
    part. Duck-types transformers' Cache.update (the 4D mask passed to the model means no other
    Cache method is consulted)."""

    def __init__(self, slab: KVSlab, rows: int, at: int):
        self.slab, self.rows, self.at = slab, rows, at

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        end = self.at + key_states.shape[2]
        keys, values = self.slab.keys[layer_idx], self.slab.values[layer_idx]
        keys[: self.rows, :, self.at : end].copy_(key_states)
        values[: self.rows, :, self.at : end].copy_(value_states)
        return keys[: self.rows, :, :end], values[: self.rows, :, :end]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.at


class KVSlab:
    """Preallocated key/value buffers [rows, kv_heads, columns, head_dim] for every layer."""

    def __init__(
        self, layers: int, kv_heads: int, head_dim: int, dtype, device, row_limit: int = 1
    ):
        self.shape = (layers, kv_heads, head_dim)
        self.dtype, self.device = dtype, device
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.row_capacity = 0
        self.column_capacity = 0
        self.row_limit = row_limit  # rows never grow past this by doubling (the batch size)

    def reserve(self, rows: int, columns: int, keep_rows: int, keep_columns: int) -> None:
        """Makes room for `rows` x `columns`, keeping the first keep_rows x keep_columns.

        Grows geometrically (rows doubling up to what is asked, columns by half), so that a
        running batch reallocates a handful of times, not at every join or every 64 steps:
        each reallocation briefly holds two copies, and many of them fragment the heap.
        Freshly allocated space is zeroed: masked key/values get a zero attention weight,
        which is only harmless when they are finite.
        """
        if rows <= self.row_capacity and columns <= self.column_capacity:
            return
        if rows > self.row_capacity:
            rows = max(rows, min(self.row_limit, 2 * self.row_capacity))
        else:
            rows = self.row_capacity
        if columns > self.column_capacity:
            columns = max(columns, self.column_capacity * 3 // 2) + 64
        else:
            columns = self.column_capacity
        layers, kv_heads, head_dim = self.shape
        for buffers in (self.keys, self.values):
            for layer in range(layers):
                grown = torch.zeros(
                    rows, kv_heads, columns, head_dim, dtype=self.dtype, device=self.device
                )
                if keep_rows and keep_columns:
                    grown[:keep_rows, :, :keep_columns] = buffers[layer][
                        :keep_rows, :, :keep_columns
                    ]
                if layer < len(buffers):
                    buffers[layer] = grown
                else:
                    buffers.append(grown)
        self.row_capacity, self.column_capacity = rows, columns

    def shift_right(self, rows: int, columns: int, by: int) -> None:
        """Moves the first `columns` columns of the first `rows` rows `by` columns right, in
        place (capacity must allow), zeroing the columns it vacates."""
        for buffers in (self.keys, self.values):
            for buffer in buffers:
                moved = buffer[:rows, :, :columns].clone()
                buffer[:rows, :, by : by + columns] = moved
                buffer[:rows, :, :by] = 0

    def release(self) -> None:
        self.keys, self.values = [], []
        self.row_capacity = self.column_capacity = 0
