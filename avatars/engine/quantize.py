"""int8 matrix products for CPU serving (`AVATAR_MODEL=<model>+int8`).

Every linear layer of the model (attention, MLP, the output head) gets int8 weights, one scale
per output channel, and multiplies int8 activations with one scale per token: `torch._int_mm`,
int8 x int8 summed exactly in int32. On these 2-core machines that product is 3.5-4.6x faster
than float32 `mm` at the engine's shapes, because a decode step is bound by reading weights.

Per token, not per tensor: torch's `quantize_dynamic` scales a whole batch's activations with
one number, so a row's reply would depend on the rows decoded beside it, and a redelivered turn
would not repeat the reply already streamed. Here each row's output depends on its own
activations only (the int32 sums are exact, whatever the batch), so the engine's rule holds: a
prompt gets the same tokens alone or in any batch (tests/test_engine_quantize.py).

What int8 costs in persona fidelity is measured like any engine change, by certification
(docs/model-versions.md); the default model's weights were 4-bit (Q4_1) to begin with.
"""

from __future__ import annotations

import torch
from torch import nn


class Int8Linear(nn.Module):
    """A frozen nn.Linear with int8 weights and per-token int8 activations (see module doc)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        weight = linear.weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp(min=1e-8) / 127
        quantized = (weight / scale[:, None]).round().clamp(-127, 127).to(torch.int8)
        # _int_mm takes [in, out] on the right.
        self.register_buffer("weight_t", quantized.t().contiguous())
        self.register_buffer("weight_scale", scale)
        bias = linear.bias.detach().float() if linear.bias is not None else None
        self.register_buffer("bias", bias)
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        rows = x.reshape(-1, self.in_features).float()
        scale = rows.abs().amax(dim=1, keepdim=True).clamp(min=1e-8) / 127
        quantized = (rows / scale).round_().clamp_(-127, 127).to(torch.int8)
        out = torch._int_mm(quantized, self.weight_t).float()
        out.mul_(scale).mul_(self.weight_scale)
        if self.bias is not None:
            out.add_(self.bias)
        return out.reshape(*shape[:-1], self.out_features).to(x.dtype)


def quantize_int8(model: nn.Module) -> int:
    """Replaces every nn.Linear of `model` in place (CPU inference only); returns how many.
    The output head gets its own int8 copy even when tied to the input embedding, which keeps
    its float weights for the lookup."""
    targets = [
        (parent, child_name, child)
        for parent in model.modules()
        for child_name, child in parent.named_children()
        if isinstance(child, nn.Linear)
    ]
    for parent, child_name, child in targets:
        setattr(parent, child_name, Int8Linear(child))
    return len(targets)
