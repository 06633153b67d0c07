"""`LoRALinear`: a frozen nn.Linear W0 plus a trainable low-rank update ΔW = (α/r)·B·A (paper §4.1).

Names follow the paper: W0 is d×k (out×in), B is d×r, A is r×k, ``scaling`` is α/r.
"""

from __future__ import annotations

import math
import zlib

import torch
import torch.nn.functional as F
from torch import nn

from .runtime import check_number

__all__ = ["LoRALinear", "check_lora_args"]

INITS = ("gaussian", "kaiming")
ALPHA_MAX = 1e6  # far above any α in use (the paper's are 8–32); keeps scaling·B@A away from overflow


def check_lora_args(base, r, alpha=None, dropout=0.0, init="gaussian", rslora=False) -> None:
    """Validate LoRALinear arguments without touching `base`; raises TypeError/ValueError naming the parameter."""
    if not isinstance(base, nn.Linear) or isinstance(base, LoRALinear):
        raise TypeError(f"base must be a torch.nn.Linear, got {type(base).__name__}")
    if isinstance(r, bool) or not isinstance(r, int):
        raise TypeError(f"r must be an int, got {type(r).__name__} {r!r}")
    d, k = base.weight.shape
    if r <= 0:
        raise ValueError(f"r must be a positive int, got {r}")
    if r > min(d, k):
        raise ValueError(f"r must be ≤ min(d, k) = {min(d, k)} for a {d}×{k} weight, got {r}")
    if alpha is not None:
        check_number("alpha", alpha, 0, ALPHA_MAX, bounds="(]")
    check_number("dropout", dropout, 0, 1, bounds="[)")
    if not isinstance(init, str) or init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if not isinstance(rslora, bool):
        raise TypeError(f"rslora must be a bool, got {type(rslora).__name__}")


class LoRALinear(nn.Module):
    """h = W0·x + b + (α/r)·B·A·dropout(x), with W0 and b frozen and only A, B trained.

    ``merge()`` folds ΔW into W0 so inference costs one plain matmul (§4.1, "No Additional
    Inference Latency"); ``unmerge()`` takes it out again.
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float | None = None, dropout: float = 0.0,
                 init: str = "gaussian", rslora: bool = False):
        check_lora_args(base, r, alpha, dropout, init, rslora)
        super().__init__()
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        d, k = base.weight.shape
        self.r = r
        self.alpha = float(r if alpha is None else alpha)
        self.rslora = rslora
        self.init = init
        self.scaling = self.alpha / (math.sqrt(r) if rslora else r)
        w = base.weight
        self.A = nn.Parameter(torch.empty(r, k, dtype=w.dtype, device=w.device))
        self.B = nn.Parameter(torch.empty(d, r, dtype=w.dtype, device=w.device))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self._merged = False
        self._W0: torch.Tensor | None = None  # exact copy of W0, only with merge(keep_original=True)
        self._merged_fp: tuple | None = None  # what ΔW was made of at merge time (see _fingerprint)
        self.reset_parameters()

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def weight(self) -> torch.Tensor:
        """The layer's current weight matrix (W0, or W0 + ΔW when merged)."""
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    @property
    def kept_original(self) -> torch.Tensor | None:
        """The exact copy of W0 held while merged with keep_original=True (None otherwise): its memory cost."""
        return self._W0

    @property
    def merged(self) -> bool:
        return self._merged

    def reset_parameters(self) -> None:
        """A random (Gaussian N(0, 1/k) as in the paper, or Kaiming-uniform as loralib/PEFT), B = 0."""
        if self._merged:
            raise RuntimeError("cannot reset A and B while merged; call unmerge() first")
        with torch.no_grad():
            if self.init == "gaussian":
                nn.init.normal_(self.A, std=1.0 / math.sqrt(self.A.shape[1]))
            else:
                nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
            nn.init.zeros_(self.B)

    def delta_weight(self) -> torch.Tensor:
        """ΔW = scaling · B @ A, a d×k matrix in the layer's dtype."""
        return (self.B @ self.A) * self.scaling

    def _work_dtype(self) -> torch.dtype:
        """float32 for low-precision layers, float64 stays float64 (never round a double through float)."""
        return torch.promote_types(self.base.weight.dtype, torch.float32)

    def _delta_fp32(self) -> torch.Tensor:
        work = self._work_dtype()
        return (self.B.detach().to(work) @ self.A.detach().to(work)) * self.scaling

    def _check_mergeable(self) -> None:
        """Raise ValueError, touching nothing, if W + ΔW would hold NaN or inf, in any dtype.

        Every entry of W + ΔW (and every partial sum of the matmul) is at most max|W| +
        max(1, scaling)·r·max|B|·max|A| in size. When that bound is well below the dtype's largest number
        (False if W, A or B hold NaN/inf) the merge is finite; only otherwise is W + ΔW formed and checked.
        """
        # min and max of A, B, W in three reductions and one device→host copy (one sync on a GPU); NaN propagates
        W = self.base.weight.detach()
        lo_a, hi_a, lo_b, hi_b, lo_w, hi_w = torch.cat(
            [torch.stack(torch.aminmax(t.detach())).float() for t in (self.A, self.B, W)]).tolist()
        bound = max(-lo_w, hi_w) + max(-lo_a, hi_a) * max(-lo_b, hi_b) * self.r * max(1.0, self.scaling)
        if bound < torch.finfo(W.dtype).max / 4:
            return
        if not torch.isfinite(self._delta_fp32()).all():
            raise ValueError("refusing to merge: ΔW = scaling·B@A contains NaN or inf (weights untouched)")
        self._shifted(+1.0)  # raises if W + ΔW is not finite in the weight's dtype

    def _shifted(self, sign: float) -> torch.Tensor:
        """W + sign·ΔW as a new tensor in the work dtype (W untouched); refuses a result not finite in W's dtype."""
        W, work = self.base.weight, self._work_dtype()
        B, A = self.B.detach().to(work), self.A.detach().to(work)
        new = W.to(work, copy=True).addmm_(B, A, alpha=sign * self.scaling)
        # e.g. float16 overflows at 65504 although ΔW itself is finite. Rounding is monotonic, so the
        # smallest and largest entries decide: cast just those two (a full isfinite pass is slow on CPU)
        if not torch.isfinite(torch.stack(torch.aminmax(new)).to(W.dtype)).all():  # NaN propagates too
            raise ValueError(f"refusing to merge: W ± ΔW overflows {W.dtype} or holds NaN (weights untouched)")
        return new

    def _fingerprint(self) -> tuple:
        """What ΔW is made of: scaling, dtype, shapes and a CRC-32 of A's and B's bytes, read in place on the CPU
        (~5 GB/s, a few % of a merge). Catches changes in place, through ``.data``, a reassigned ``layer.A``,
        a new scaling — all but a 2⁻³² chance per change, with no copy of A or B kept."""
        crc = 0
        for t in (self.A, self.B):
            crc = zlib.crc32(t.detach().cpu().contiguous().view(torch.uint8).numpy(), crc)
        return self.scaling, self.A.dtype, self.A.shape, self.B.shape, crc

    def _check_unmergeable(self) -> None:
        """Raise RuntimeError, touching nothing, if unmerge() could not give W0 back."""
        if self._merged and self._W0 is None and self._merged_fp != self._fingerprint():
            raise RuntimeError("A, B or scaling changed while the layer was merged, so subtracting today's ΔW "
                               "would not restore W0; train only unmerged layers (or merge with keep_original=True)")

    def _add_delta_(self, sign: float) -> None:
        """W ← W + sign·ΔW in the work dtype, fused into one addmm (in place for float32/float64 layers)."""
        W = self.base.weight
        if W.dtype == self._work_dtype():
            work = W.dtype
            W.addmm_(self.B.detach().to(work), self.A.detach().to(work), alpha=sign * self.scaling)
        else:
            W.copy_(self._shifted(sign))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = self.base
        if self._merged:  # W already holds W0 + ΔW: exactly the cost of a plain nn.Linear
            return F.linear(x, base.weight, base.bias)
        # Unmerged: three kernels on a 2-D view, h = x·W0ᵀ + b, z = dropout(x)·Aᵀ, then
        # h + scaling·z·Bᵀ fused in one addmm (no separate scale and add over the d-wide output).
        lead = x.shape[:-1]
        x2 = x.flatten(0, -2) if x.dim() > 2 else (x.unsqueeze(0) if x.dim() == 1 else x)
        h = F.linear(x2, base.weight, base.bias)
        drop = self.dropout
        z = F.linear(x2 if isinstance(drop, nn.Identity) else drop(x2), self.A)  # (tokens, r)
        B = self.B
        if h.dtype == B.dtype:  # in place: an out-of-place addmm would first copy h into a new tensor
            out = h.addmm_(z, B.t(), alpha=self.scaling)
        else:  # under autocast h is bf16/fp16 while B is float32: let autocast choose the dtype
            out = torch.addmm(h, z, B.t(), alpha=self.scaling)
        return out.view(*lead, out.shape[-1])

    @torch.no_grad()
    def merge(self, keep_original: bool = False) -> None:
        """W ← W0 + ΔW, computed in float32 and cast back to the weight's dtype.

        keep_original=True also keeps an exact copy of W0 (one more d×k matrix in memory)
        so that ``unmerge()`` restores it bit-for-bit, even in bfloat16/float16.
        """
        if self._merged:
            raise RuntimeError("LoRALinear is already merged; merging twice would add ΔW twice")
        if not isinstance(keep_original, bool):
            raise TypeError(f"keep_original must be a bool, got {type(keep_original).__name__}")
        self._check_mergeable()
        self._merge(keep_original)

    @torch.no_grad()
    def _merge(self, keep_original: bool) -> None:  # the caller has run _check_mergeable
        self._merged_fp = None if keep_original else self._fingerprint()
        self._W0 = self.base.weight.detach().clone() if keep_original else None
        self._add_delta_(+1.0)
        self._merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """W ← W − ΔW (float32 arithmetic), or the exact W0 if merge(keep_original=True) was used.

        Subtraction gives W0 back up to rounding, not bit for bit: entry by entry
        |W − W0| ≤ 2(r + 1)·eps·(|W0| + scaling·|B|·|A|), eps that of the weight's dtype and |B|·|A| the
        product of the absolute matrices (at most r + 1 roundings of addmm's sums, on the way in and out).
        When |ΔW| ≫ |W0| that is far from "1e-6 relative to W0": keep_original=True is the way to exact.
        """
        if not self._merged:
            raise RuntimeError("LoRALinear is not merged; there is nothing to unmerge")
        self._check_unmergeable()
        self._unmerge()

    @torch.no_grad()
    def _unmerge(self) -> None:  # the caller has run _check_unmergeable
        if self._W0 is not None:
            self.base.weight.copy_(self._W0)
        else:
            self._add_delta_(-1.0)
        self._merged, self._W0, self._merged_fp = False, None, None

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, r={self.r}, "
                f"alpha={self.alpha:g}, scaling={self.scaling:g}, merged={self._merged}")
