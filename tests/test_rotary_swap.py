"""Rotary as one swap kernel (decoder.apply_rotary): the rotation's minus rides on sin, so the result is HF's
x * cos + rotate_half(x) * sin (or GPT-J's rotate_every_two) bit for bit, in every dtype, full and partial."""

import pytest
import torch

from sentinel_core.decoder import apply_rotary


def hf_rotary(x, cos, sin, interleaved):
    if interleaved:
        rotated = torch.stack((-x[..., 1::2], x[..., ::2]), dim=-1).flatten(-2)
    else:
        x1, x2 = x.chunk(2, dim=-1)
        rotated = torch.cat((-x2, x1), dim=-1)
    return x * cos + rotated * sin


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("rotary_dim", [16, 8])  # whole head, and partial rotary (GPT-NeoX, Phi, GPT-J)
def test_swap_rotary_is_hf_bit_for_bit(dtype, interleaved, rotary_dim):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 3, 16, generator=g).to(dtype)
    angles = torch.randn(2, 5, 1, rotary_dim // 2, generator=g) * 100
    emb = angles.repeat_interleave(2, -1) if interleaved else torch.cat((angles, angles), -1)
    cos, sin = emb.cos(), emb.sin()
    sign = torch.ones(rotary_dim)
    (sign.view(-1, 2)[:, 0] if interleaved else sign[: rotary_dim // 2]).fill_(-1)
    ours = apply_rotary(x, cos.to(dtype), (sin * sign).to(dtype), rotary_dim, interleaved)
    theirs = torch.cat([hf_rotary(x[..., :rotary_dim], cos.to(dtype), sin.to(dtype), interleaved),
                        x[..., rotary_dim:]], dim=-1)
    assert torch.equal(ours, theirs)
