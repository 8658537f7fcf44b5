"""KappaFace (Oinar, Le & Woo 2022): ArcFace with a class-adaptive margin ``ψ_c · m0``.

Why: a fixed margin ignores class imbalance. Classes with few images, or whose images are
spread out (low concentration κ of a von Mises-Fisher fit), are the ones the model generalises
worst on, so they get a larger margin; large, tight classes get a smaller one.

How (paper, Sec. 3; notation kept):

* a memory buffer holds one normalised feature per *training sample*, updated each time the
  sample is seen: ``z̄_i ← α·z̄_i + (1 − α)·z_i`` (``α = 0.7``). On first sight ``z̄_i = z_i``
  (an empty slot would otherwise start at ``0.3·z_i``; we re-normalise before estimating, so
  this only changes how fast the first epochs forget). ``forward`` therefore needs the dataset
  sample ``indices``; without them (or in eval mode) the buffer is left alone.
* once per epoch the loop calls :meth:`KappaFaceHead.update_margins`; for each class the mean
  resultant length ``r̄ = ||Σ u_i|| / n`` of its buffered unit features gives the vMF
  concentration approximation (Banerjee et al. 2005) ``κ̂ = r̄(d − r̄²) / (1 − r̄²)``;
* ``κ̃ = (κ̂ − mean κ̂) / std κ̂`` across classes (population std), concentration weight
  ``wᵏ = 1 − sigmoid(κ̃·T)``;
* sample-size weight ``wˢ = (cos(π·n_c/K) + 1) / 2`` with ``K = k_scale · max_c n_c``. The paper
  says ``K = max n_c`` (``k_scale = 1``, our default: the largest class gets ``wˢ = 0``); the
  authors' code uses ``1.05 · max n_c`` (``k_scale = 1.05``), which keeps a small positive weight
  for the largest class;
* ``ψ_c = γ·wˢ + (1 − γ)·wᵏ`` and the target logit is ``s · cos(θ + ψ_c·m0)``, with ArcFace's
  monotonic fallback where ``θ + ψ_c·m0 > π``.

Choices the paper leaves open, documented here:

* before the first ``update_margins`` (and for classes with fewer than 2 buffered samples, whose
  ``r̄ = 1`` makes κ̂ infinite) ``κ̃ = 0``, i.e. ``wᵏ = 1/2``: "average concentration";
* if all classes have the same κ̂ (std 0), ``κ̃ = 0`` for all.
* memory cost is ``num_samples × d`` fp32 (5.8 M × 512 ≈ 12 GB for MS1MV2), like the authors'.

Buffers (``memory``, ``memory_labels``, ``margins``, ``kappa``) are registered, so the state is
saved in checkpoints and a resumed run continues with the same margins. Under DDP every rank
all-gathers the batch's (indices, features, labels) before updating, so all ranks keep the same
buffer and compute the same margins (ranks must use equal per-rank batch sizes, i.e.
``drop_last=True``, which the arcface_torch loop does anyway).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from training.heads.base import CosineHead, arc_margin_target

__all__ = [
    "KappaFaceHead",
    "concentration_weight",
    "sample_size_weight",
    "standardise",
    "vmf_concentration",
]


def vmf_concentration(rbar: torch.Tensor, dim: int) -> torch.Tensor:
    """Banerjee's approximation of the vMF concentration: ``κ̂ = r̄(d − r̄²) / (1 − r̄²)``."""
    rbar = rbar.clamp(0.0, 1.0 - 1e-7)
    return rbar * (dim - rbar**2) / (1.0 - rbar**2)


def standardise(kappa: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``(κ − mean)/std`` over ``valid`` classes (population std); 0 elsewhere or if std is 0."""
    out = torch.zeros_like(kappa)
    if int(valid.sum()) < 2:
        return out
    k = kappa[valid]
    std = k.std(unbiased=False)
    if not torch.isfinite(std) or float(std) == 0.0:
        return out
    out[valid] = (k - k.mean()) / std
    return out


def concentration_weight(kappa_std: torch.Tensor, temperature: float) -> torch.Tensor:
    """``wᵏ = 1 − sigmoid(κ̃·T)``: low concentration (spread-out class) -> weight near 1."""
    return 1.0 - torch.sigmoid(kappa_std * temperature)


def sample_size_weight(counts: torch.Tensor, k_scale: float = 1.0) -> torch.Tensor:
    """``wˢ = (cos(π·n_c/K) + 1)/2``, ``K = k_scale·max n_c``: few samples -> weight near 1."""
    k = k_scale * counts.max()
    return (torch.cos(math.pi * counts / k) + 1.0) / 2.0


class KappaFaceHead(CosineHead):
    """Class-adaptive additive angular margin; see the module docstring for the method.

    Args:
        class_counts: number of training images of each class (length ``num_classes``).
        num_samples: size of the per-sample memory (dataset length); default ``sum(class_counts)``.
        s, m0, gamma, temperature, alpha: paper/author defaults 64, 0.8, 0.7, 0.4, 0.7.
        k_scale: ``K = k_scale · max n_c`` (1.0 as in the paper, 1.05 as in the authors' code).
        easy_margin: as in ArcFace.
        shard: ``(start, count)``: hold only those class centres (sharded Partial FC); the
            per-class state (counts, κ, margins) and the sample memory stay global.
    """

    name = "kappaface"

    memory: torch.Tensor
    memory_labels: torch.Tensor
    class_counts: torch.Tensor
    margins: torch.Tensor
    kappa: torch.Tensor

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        class_counts: Sequence[int] | torch.Tensor,
        num_samples: int | None = None,
        s: float = 64.0,
        m0: float = 0.8,
        gamma: float = 0.7,
        temperature: float = 0.4,
        alpha: float = 0.7,
        k_scale: float = 1.0,
        easy_margin: bool = False,
        shard: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(embedding_size, num_classes, s, shard)
        counts = torch.as_tensor(class_counts, dtype=torch.float32).flatten()
        if counts.numel() != num_classes:
            raise ValueError(f"class_counts has {counts.numel()} entries for {num_classes} classes")
        if (counts <= 0).any():
            raise ValueError("every class needs at least one training sample (class_counts > 0)")
        if not 0.0 <= alpha < 1.0 or not 0.0 <= gamma <= 1.0 or k_scale < 1.0:
            raise ValueError("need 0 <= alpha < 1, 0 <= gamma <= 1 and k_scale >= 1")
        self.m0, self.gamma, self.temperature = float(m0), float(gamma), float(temperature)
        self.alpha, self.k_scale, self.easy_margin = float(alpha), float(k_scale), bool(easy_margin)
        n = int(counts.sum().item()) if num_samples is None else int(num_samples)
        self.num_samples = n
        self.register_buffer("class_counts", counts)
        self.register_buffer("memory", torch.zeros(n, embedding_size))
        self.register_buffer("memory_labels", torch.full((n,), -1, dtype=torch.long))
        self.register_buffer("kappa", torch.zeros(num_classes))
        self.register_buffer("margins", torch.zeros(num_classes))
        self.register_buffer("sample_weight", sample_size_weight(counts, self.k_scale))
        self._set_margins(torch.zeros(num_classes))

    # -- margins ---------------------------------------------------------------------------
    def _set_margins(self, kappa_std: torch.Tensor) -> None:
        w_k = concentration_weight(kappa_std, self.temperature)
        psi = self.gamma * self.sample_weight + (1.0 - self.gamma) * w_k
        self.margins.copy_(psi * self.m0)

    @torch.no_grad()
    def update_margins(self) -> torch.Tensor:
        """Re-estimate each class's κ from the buffer and recompute ``margins``; call once per epoch.

        Returns the new per-class margins (radians).
        """
        seen = self.memory_labels >= 0
        labels = self.memory_labels[seen]
        unit = F.normalize(self.memory[seen].float(), dim=1)
        sums = torch.zeros(self.num_classes, self.embedding_size, device=unit.device).index_add_(
            0, labels, unit
        )
        n = torch.bincount(labels, minlength=self.num_classes).to(unit.dtype)
        valid = n >= 2
        rbar = torch.where(valid, sums.norm(dim=1) / n.clamp_min(1.0), torch.zeros_like(n))
        kappa = torch.where(valid, vmf_concentration(rbar, self.embedding_size), torch.zeros_like(n))
        self.kappa.copy_(kappa)
        self._set_margins(standardise(kappa, valid))
        return self.margins.clone()

    # -- memory ----------------------------------------------------------------------------
    @torch.no_grad()
    def update_memory(self, embeddings: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor) -> None:
        """EMA-update the buffered features of samples ``indices`` (global class ``labels``)."""
        z = F.normalize(embeddings.detach().float(), dim=1)
        indices = indices.to(device=z.device, dtype=torch.long)
        labels = labels.to(z.device)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            z, labels, indices = (_all_gather(t) for t in (z, labels, indices))
        keep = labels >= 0
        z, labels, indices = z[keep], labels[keep], indices[keep]
        if indices.numel() == 0:
            return
        if int(indices.min()) < 0 or int(indices.max()) >= self.num_samples:
            raise IndexError(
                f"sample indices must be in [0, {self.num_samples}); got {int(indices.min())}..{int(indices.max())}"
            )
        old = self.memory[indices]
        first = (self.memory_labels[indices] < 0).unsqueeze(1)
        self.memory[indices] = torch.where(first, z, self.alpha * old + (1.0 - self.alpha) * z)
        self.memory_labels[indices] = labels

    # -- forward ---------------------------------------------------------------------------
    def logits_for(self, embeddings: torch.Tensor, labels: torch.Tensor, class_ids: torch.Tensor | None,
                   indices: torch.Tensor | None = None) -> torch.Tensor:
        if self.training and indices is not None:
            global_labels = torch.where(
                labels >= 0, self.global_classes(labels.clamp_min(0), class_ids), labels
            )
            self.update_memory(embeddings, global_labels, indices)
        return super().logits_for(embeddings, labels, class_ids, indices)

    def target_logit(self, cos_target: torch.Tensor, target_classes: torch.Tensor) -> torch.Tensor:
        return arc_margin_target(
            cos_target, self.margins[target_classes].to(cos_target.dtype), self.easy_margin
        )

    def hparams(self) -> dict[str, Any]:
        return {
            **super().hparams(),
            "m0": self.m0,
            "gamma": self.gamma,
            "temperature": self.temperature,
            "alpha": self.alpha,
            "k_scale": self.k_scale,
            "easy_margin": self.easy_margin,
            "num_samples": self.num_samples,
        }


def _all_gather(t: torch.Tensor) -> torch.Tensor:
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)
