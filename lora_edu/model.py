"""A toy decoder-only transformer with separate q/k/v/o and up/down projections (the names PEFT users know).

Pre-LayerNorm blocks, causal self-attention, learned positions — a GPT in miniature, small enough to
train on a laptop CPU in a minute, with every weight matrix LoRA can target standing on its own.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .runtime import check_number

__all__ = ["ToyConfig", "ToyTransformer"]


LIMITS = {"vocab_size": 2**16, "max_len": 2**12, "d_model": 2**12, "n_layer": 64, "n_head": 64, "d_ff": 2**14}


@dataclass
class ToyConfig:
    vocab_size: int = 20
    max_len: int = 16
    d_model: int = 64
    n_layer: int = 3
    n_head: int = 4
    d_ff: int = 256
    dropout: float = 0.0
    bias: bool = True

    def __post_init__(self):  # bounded: a toy, never one that asks for terabytes
        for name, hi in LIMITS.items():
            check_number(name, getattr(self, name), 1, hi, integer=True)
        if self.d_model % self.n_head:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})")
        check_number("dropout", self.dropout, 0, 1, bounds="[)")
        if not isinstance(self.bias, bool):
            raise TypeError(f"bias must be a bool, got {type(self.bias).__name__}")

    def to_dict(self) -> dict:
        return asdict(self)


class CausalSelfAttention(nn.Module):
    """softmax(Q Kᵀ/√d_head + causal mask) V with W_q, W_k, W_v, W_o as four separate d×d Linears (§4.2)."""

    def __init__(self, cfg: ToyConfig):
        super().__init__()
        d = cfg.d_model
        self.n_head = cfg.n_head
        self.q_proj = nn.Linear(d, d, bias=cfg.bias)
        self.k_proj = nn.Linear(d, d, bias=cfg.bias)
        self.v_proj = nn.Linear(d, d, bias=cfg.bias)
        self.o_proj = nn.Linear(d, d, bias=cfg.bias)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, return_attn: bool = False):
        B, T, d = x.shape
        h = self.n_head

        def split(t):
            return t.view(B, T, h, d // h).transpose(1, 2)

        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        if return_attn:
            att = (q @ k.transpose(-2, -1)) / math.sqrt(d // h)
            mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            att = att.masked_fill(~mask, float("-inf")).softmax(-1)
            y = att @ v
        else:
            att = None
            p = self.dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)
        y = self.o_proj(y.transpose(1, 2).reshape(B, T, d))
        return (y, att) if return_attn else y


class MLP(nn.Module):
    def __init__(self, cfg: ToyConfig):
        super().__init__()
        self.up_proj = nn.Linear(cfg.d_model, cfg.d_ff, bias=cfg.bias)
        self.down_proj = nn.Linear(cfg.d_ff, cfg.d_model, bias=cfg.bias)

    def forward(self, x):
        return self.down_proj(F.gelu(self.up_proj(x)))


class Block(nn.Module):
    def __init__(self, cfg: ToyConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, return_attn: bool = False):
        if return_attn:
            a, att = self.attn(self.ln1(x), return_attn=True)
        else:
            a, att = self.attn(self.ln1(x)), None
        x = x + self.drop(a)
        x = x + self.drop(self.mlp(self.ln2(x)))
        return (x, att) if return_attn else x


class ToyTransformer(nn.Module):
    """tokens (batch, T) → logits (batch, T, vocab).

    Linear names: blocks.{i}.attn.{q,k,v,o}_proj and blocks.{i}.mlp.{up,down}_proj.
    """

    def __init__(self, cfg: ToyConfig | None = None):
        super().__init__()
        if cfg is not None and not isinstance(cfg, ToyConfig):
            raise TypeError(f"cfg must be a ToyConfig or None, got {type(cfg).__name__}")
        self.cfg = cfg = cfg or ToyConfig()
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def forward(self, tokens: torch.Tensor, return_attn: bool = False):
        if not isinstance(tokens, torch.Tensor) or tokens.dtype not in (torch.long, torch.int):
            raise TypeError(f"tokens must be a tensor of token ids, got {type(tokens).__name__} "
                            f"{getattr(tokens, 'dtype', '')}")
        if tokens.ndim != 2:
            raise ValueError(f"tokens must have shape (batch, T), got {tuple(tokens.shape)}")
        T = tokens.shape[1]
        if T > self.cfg.max_len:
            raise ValueError(f"sequence length {T} exceeds max_len {self.cfg.max_len}")
        if tokens.numel() and not 0 <= tokens.min() <= tokens.max() < self.cfg.vocab_size:
            raise ValueError(f"tokens must be ids in [0, {self.cfg.vocab_size}), got {tokens.min()}..{tokens.max()}")
        pos = torch.arange(T, device=tokens.device)
        x = self.tok_emb(tokens) + self.pos_emb(pos)
        atts = []
        for blk in self.blocks:
            if return_attn:
                x, att = blk(x, return_attn=True)
                atts.append(att)
            else:
                x = blk(x)
        logits = self.lm_head(self.ln_f(x))
        return (logits, atts) if return_attn else logits

    def weight_matrices(self) -> dict[str, torch.Tensor]:
        """{qualified Linear name: weight} for every projection LoRA could target."""
        return {n: m.weight for n, m in self.named_modules() if isinstance(m, nn.Linear)}
