"""`LoRALinear`: a frozen nn.Linear W0 plus a trainable low-rank update ΔW = (α/r)·B·A (paper §4.1).

Names follow the paper: W0 is d×k (out×in), B is d×r, A is r×k, ``scaling`` is α/r.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LoRALinear", "check_lora_args"]

INITS = ("gaussian", "kaiming")


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
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
            raise TypeError(f"alpha must be a number or None, got {type(alpha).__name__}")
        if not math.isfinite(alpha) or alpha <= 0:
            raise ValueError(f"alpha must be a finite number > 0, got {alpha}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
        raise TypeError(f"dropout must be a number in [0, 1), got {type(dropout).__name__}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if init not in INITS:
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
        self._merged_versions: tuple[int, int] | None = None
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

    def _delta_is_finite(self) -> bool:
        """Whether ΔW = scaling·B@A is finite, usually without forming ΔW.

        Each entry of ΔW (and each partial sum of the matmul) is at most max(1, scaling)·r·max|B|·max|A|
        in size; when that bound is far below the float32 maximum (and A, B hold no NaN/inf, which make
        the bound NaN/inf) ΔW is finite. Only otherwise is ΔW computed and checked.
        """
        # min and max of A and B in two reductions and one device→host copy (one sync on a GPU); NaN propagates
        lo_a, hi_a, lo_b, hi_b = torch.stack([*torch.aminmax(self.A.detach()),
                                              *torch.aminmax(self.B.detach())]).float().tolist()
        bound = max(-lo_a, hi_a) * max(-lo_b, hi_b) * self.r * max(1.0, self.scaling)
        if bound < 1e37:  # False for NaN too
            return True
        return bool(torch.isfinite(self._delta_fp32()).all())

    def _shifted(self, sign: float) -> torch.Tensor:
        """W + sign·ΔW for a low-precision layer, computed in float32 and cast back; refuses an overflow."""
        W = self.base.weight
        work = self._work_dtype()
        new = W.to(work).addmm_(self.B.detach().to(work), self.A.detach().to(work), alpha=sign * self.scaling)
        # e.g. float16 overflows at 65504 although ΔW itself is finite. Rounding is monotonic, so the
        # smallest and largest entries decide: cast just those two (a full isfinite pass is slow on CPU)
        if not torch.isfinite(torch.stack(torch.aminmax(new)).to(W.dtype)).all():  # NaN propagates too
            raise ValueError(f"refusing to merge: W ± ΔW overflows {W.dtype} (weights untouched)")
        return new

    def _check_mergeable(self) -> None:
        """Raise ValueError, touching nothing, if merging would put NaN or inf into the weight."""
        if not self._delta_is_finite():
            raise ValueError("refusing to merge: ΔW = scaling·B@A contains NaN or inf (weights untouched)")
        if self.base.weight.dtype != self._work_dtype():
            self._shifted(+1.0)

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
        if not self._delta_is_finite():
            raise ValueError("refusing to merge: ΔW = scaling·B@A contains NaN or inf (weights untouched)")
        original = self.base.weight.detach().clone() if keep_original else None
        self._add_delta_(+1.0)
        self._W0 = original
        self._merged = True
        self._merged_versions = (self.A._version, self.B._version)

    @torch.no_grad()
    def unmerge(self) -> None:
        """W ← W − ΔW (float32 arithmetic), or the exact W0 if merge(keep_original=True) was used."""
        if not self._merged:
            raise RuntimeError("LoRALinear is not merged; there is nothing to unmerge")
        if self._merged_versions != (self.A._version, self.B._version) and self._W0 is None:
            raise RuntimeError(
                "A or B changed while the layer was merged, so subtracting today's ΔW would not "
                "restore W0; train only unmerged layers (or merge with keep_original=True)"
            )
        W = self.base.weight
        if self._W0 is not None:
            W.copy_(self._W0)
            self._W0 = None
        else:
            self._add_delta_(-1.0)
        self._merged = False
        self._merged_versions = None

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, r={self.r}, "
                f"alpha={self.alpha:g}, scaling={self.scaling:g}, merged={self._merged}")
