"""Heads: each target logit against its formula on hand-computed values, the special cases of
the combined margin, ArcFace's θ+m>π branch, KappaFace's adaptive margins on a hand-worked
example, Partial FC, registry. Expected numbers are computed with ``math``, not the modules."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from training.heads import (
    ArcFaceHead,
    CombinedMarginHead,
    CosFaceHead,
    KappaFaceHead,
    NormFaceHead,
    PartialFC,
    SoftmaxHead,
    build_head,
    list_heads,
)

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.filterwarnings("error::UserWarning")]

S = 64.0
CENTRE_ANGLES = [0.0, math.pi / 2, math.pi, 3 * math.pi / 2]  # 4 classes on the unit circle


def _unit(phi: float) -> list[float]:
    return [math.cos(phi), math.sin(phi)]


def _circle_head(cls: type, **kw: object) -> torch.nn.Module:
    """A 2-d head whose class centres sit at CENTRE_ANGLES (so cos θ_j = cos(φ − φ_j))."""
    head = cls(2, len(CENTRE_ANGLES), **kw)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([_unit(a) for a in CENTRE_ANGLES]))
    return head


def _emb(*phis: float) -> torch.Tensor:
    return torch.tensor([_unit(p) for p in phis], dtype=torch.float32)


def _target(head: torch.nn.Module, theta: float, label: int = 0) -> float:
    """Target logit of one sample at angle ``theta`` from its class centre ``label``."""
    with torch.no_grad():
        logits = head(_emb(CENTRE_ANGLES[label] + theta), torch.tensor([label]))
    return float(logits[0, label])


# ------------------------------------------------------------------ plain heads
def test_softmax_is_a_plain_linear_layer() -> None:
    head = SoftmaxHead(3, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 0.5]]))
        head.bias.copy_(torch.tensor([0.5, -0.25]))
    x = torch.tensor([[2.0, 0.0, 1.0]])  # deliberately not normalised
    logits = head(x, torch.tensor([0])).detach()
    assert logits.tolist() == [[2 + 3 + 0.5, 0.5 - 0.25]]


def test_normface_is_scaled_cosine_everywhere() -> None:
    head = _circle_head(NormFaceHead)
    phi = 0.3
    logits = head(_emb(phi) * 7.0, torch.tensor([1])).detach()  # unnormalised input is normalised
    expected = [S * math.cos(phi - a) for a in CENTRE_ANGLES]
    assert logits[0].tolist() == pytest.approx(expected, abs=1e-4)


def test_cosface_target_and_non_target() -> None:
    head = _circle_head(CosFaceHead)
    phi = 0.7
    logits = head(_emb(phi), torch.tensor([0]))[0].detach()
    assert float(logits[0]) == pytest.approx(S * (math.cos(phi) - 0.4), abs=1e-4)
    assert float(logits[1]) == pytest.approx(S * math.cos(phi - math.pi / 2), abs=1e-4)


# ------------------------------------------------------------------ ArcFace
@pytest.mark.parametrize("theta", [0.0, 0.3, 1.0, 2.0, 2.6])
def test_arcface_regular_branch(theta: float) -> None:
    head = _circle_head(ArcFaceHead)
    assert _target(head, theta) == pytest.approx(S * math.cos(theta + 0.5), abs=2e-3)


@pytest.mark.parametrize("theta", [2.7, 3.0, math.pi])
def test_arcface_fallback_branch_when_theta_plus_m_exceeds_pi(theta: float) -> None:
    m = 0.5
    assert theta > math.pi - m
    head = _circle_head(ArcFaceHead)
    assert _target(head, theta) == pytest.approx(S * (math.cos(theta) - m * math.sin(m)), abs=2e-3)


def test_arcface_target_logit_monotonic_decreasing_in_theta() -> None:
    head = _circle_head(ArcFaceHead, m=0.5)
    thetas = [math.pi * i / 400 for i in range(401)]
    values = [_target(head, t) for t in thetas]
    assert all(b < a for a, b in itertools.pairwise(values)), "target logit must strictly decrease with θ"
    # without the fallback cos(θ + m) would rise again past π − m:
    assert math.cos(3.0 + 0.5) > math.cos(2.6 + 0.5)


def test_arcface_easy_margin() -> None:
    head = _circle_head(ArcFaceHead, easy_margin=True)
    assert _target(head, 1.0) == pytest.approx(S * math.cos(1.5), abs=1e-3)  # cos θ > 0: margin
    assert _target(head, 2.0) == pytest.approx(S * math.cos(2.0), abs=1e-3)  # cos θ <= 0: none


def test_ignored_label_gets_no_margin() -> None:
    head = _circle_head(ArcFaceHead)
    logits = head(_emb(0.2, 0.2), torch.tensor([0, -1])).detach()
    assert float(logits[1, 0]) == pytest.approx(S * math.cos(0.2), abs=1e-4)
    assert float(logits[0, 0]) == pytest.approx(S * math.cos(0.7), abs=1e-3)


# ------------------------------------------------------------------ combined
def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    with torch.no_grad():
        b.weight.copy_(a.weight)


@pytest.mark.parametrize(
    ("special", "margins"),
    [
        (lambda: ArcFaceHead(16, 10, s=64, m=0.5), (1.0, 0.5, 0.0)),
        (lambda: CosFaceHead(16, 10, s=64, m=0.4), (1.0, 0.0, 0.4)),
        (lambda: NormFaceHead(16, 10, s=64), (1.0, 0.0, 0.0)),
    ],
    ids=["arcface", "cosface", "normface"],
)
def test_combined_reproduces_special_cases(special, margins) -> None:
    torch.manual_seed(0)
    ref = special()
    comb = CombinedMarginHead(16, 10, s=64, m1=margins[0], m2=margins[1], m3=margins[2])
    _same_weights(ref, comb)
    x = torch.randn(64, 16)
    y = torch.randint(0, 10, (64,))
    # include samples far from their centre (θ + m > π) to exercise ArcFace's fallback branch
    x[:8] = -ref.weight.detach()[y[:8]] + 0.01 * torch.randn(8, 16)
    assert torch.equal(comb(x, y), ref(x, y))


def test_combined_general_formula_and_monotonic() -> None:
    m1, m2, m3 = 1.5, 0.2, 0.1
    head = _circle_head(CombinedMarginHead, m1=m1, m2=m2, m3=m3)
    for theta in (0.1, 0.8, 1.5):
        assert _target(head, theta) == pytest.approx(S * (math.cos(m1 * theta + m2) - m3), abs=2e-3)
    theta_star = (math.pi - m2) / m1
    values = [_target(head, math.pi * i / 300) for i in range(301)]
    assert all(b < a for a, b in itertools.pairwise(values))
    # continuous at θ* = (π − m2)/m1, where cos(m1θ + m2) = −1
    assert _target(head, theta_star + 1e-3) == pytest.approx(S * (-1 - m3), abs=0.1)


# ------------------------------------------------------------------ gradients
@pytest.mark.parametrize("name", ["softmax", "normface", "cosface", "arcface", "combined", "kappaface"])
def test_gradients_flow_and_stay_finite_on_the_centre(name: str) -> None:
    torch.manual_seed(0)
    kw = {"class_counts": [2, 3, 4, 5, 6]} if name == "kappaface" else {}
    head = build_head(name, 8, 5, **kw)
    x = torch.randn(4, 8)
    x[0] = head.weight.detach()[2]  # exactly on its centre: cos θ = 1, sin θ = 0
    x.requires_grad_(True)
    y = torch.tensor([2, 0, 1, 4])
    F.cross_entropy(head(x, y, torch.arange(4)), y).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert torch.isfinite(head.weight.grad).all() and head.weight.grad.abs().sum() > 0


def test_float_labels_are_rejected() -> None:
    head = ArcFaceHead(8, 5)
    with pytest.raises(TypeError, match="int64"):
        head(torch.randn(2, 8), torch.tensor([1.0, 2.0]))


# ------------------------------------------------------------------ KappaFace
# Hand-worked example, d = 3. Class c has n_c samples at polar angle a_c around the z axis with
# equally spaced azimuths, so its buffered unit features are spread by a_c.
COUNTS = [2, 3, 6]
SPREAD = [0.9, 0.5, 0.2]  # the smallest class is also the most spread out
D = 3


def _class_samples(n: int, a: float) -> list[list[float]]:
    return [
        [
            math.sin(a) * math.cos(2 * math.pi * j / n),
            math.sin(a) * math.sin(2 * math.pi * j / n),
            math.cos(a),
        ]
        for j in range(n)
    ]


def _kappa_inputs(
    counts: list[int], spread: list[float]
) -> tuple[torch.Tensor, torch.Tensor, list[list[list[float]]]]:
    feats = [_class_samples(n, a) for n, a in zip(counts, spread)]
    x = torch.tensor([v for cls in feats for v in cls])
    y = torch.tensor([c for c, n in enumerate(counts) for _ in range(n)])
    return x, y, feats


def _hand_margins(
    feats: list[list[list[float]]], counts: list[int], m0=0.8, gamma=0.7, T=0.4, k_scale=1.0
) -> tuple[list[float], list[float]]:
    kappas = []
    for vecs in feats:
        total = [sum(v[i] for v in vecs) for i in range(D)]
        r = math.sqrt(sum(t * t for t in total)) / len(vecs)
        kappas.append(r * (D - r * r) / (1 - r * r))
    mean = sum(kappas) / len(kappas)
    std = math.sqrt(sum((k - mean) ** 2 for k in kappas) / len(kappas))
    K = k_scale * max(counts)
    margins = []
    for k, n in zip(kappas, counts):
        w_k = 1 - 1 / (1 + math.exp(-((k - mean) / std) * T))
        w_s = (math.cos(math.pi * n / K) + 1) / 2
        margins.append(m0 * (gamma * w_s + (1 - gamma) * w_k))
    return kappas, margins


def _fitted_kappa_head(counts=COUNTS, spread=SPREAD, **kw) -> tuple[KappaFaceHead, list[list[list[float]]]]:
    torch.manual_seed(0)
    head = KappaFaceHead(D, len(counts), class_counts=counts, **kw)
    x, y, feats = _kappa_inputs(counts, spread)
    head.train()
    head(x, y, torch.arange(len(y)))
    head.update_margins()
    return head, feats


def test_kappaface_margins_match_hand_computation() -> None:
    head, feats = _fitted_kappa_head()
    kappas, margins = _hand_margins(feats, COUNTS)
    # spot-check the first class by a fully explicit calculation: r̄ = cos a for this layout
    r0 = math.cos(SPREAD[0])
    assert kappas[0] == pytest.approx(r0 * (3 - r0**2) / (1 - r0**2))
    assert head.kappa.tolist() == pytest.approx(kappas, rel=1e-4)
    assert head.margins.tolist() == pytest.approx(margins, rel=1e-4)


def test_kappaface_weights_step_by_step() -> None:
    """Standardisation, w^k, w^s and ψ of the example, one number at a time."""
    _, feats = _fitted_kappa_head()
    kappas, margins = _hand_margins(feats, COUNTS)
    mean = sum(kappas) / 3
    std = math.sqrt(sum((k - mean) ** 2 for k in kappas) / 3)
    z = [(k - mean) / std for k in kappas]
    assert sum(z) == pytest.approx(0, abs=1e-9) and sum(v * v for v in z) / 3 == pytest.approx(1)
    w_s = [(math.cos(math.pi * n / 6) + 1) / 2 for n in COUNTS]
    assert w_s == pytest.approx([0.75, 0.5, 0.0])  # n/K = 1/3, 1/2, 1
    w_k = [1 - 1 / (1 + math.exp(-0.4 * v)) for v in z]
    assert margins == pytest.approx([0.8 * (0.7 * s + 0.3 * k) for s, k in zip(w_s, w_k)])
    from training.heads.kappaface import (
        concentration_weight,
        sample_size_weight,
        standardise,
        vmf_concentration,
    )

    r = torch.tensor([math.cos(a) for a in SPREAD])
    assert vmf_concentration(r, 3).tolist() == pytest.approx(kappas, rel=1e-4)
    kz = standardise(torch.tensor(kappas), torch.ones(3, dtype=torch.bool))
    assert kz.tolist() == pytest.approx(z, rel=1e-4)
    assert concentration_weight(kz, 0.4).tolist() == pytest.approx(w_k, rel=1e-4)
    assert sample_size_weight(torch.tensor(COUNTS, dtype=torch.float32)).tolist() == pytest.approx(
        w_s, abs=1e-6
    )


def test_kappaface_fewer_samples_and_more_spread_get_larger_margins() -> None:
    head, _ = _fitted_kappa_head()
    m = head.margins.tolist()
    assert m[0] > m[1] > m[2]
    # spread alone (equal counts): more spread -> larger margin
    head, _ = _fitted_kappa_head(counts=[4, 4, 4], spread=[0.9, 0.5, 0.2])
    m = head.margins.tolist()
    assert m[0] > m[1] > m[2]
    # size alone (equal spread): fewer samples -> larger margin
    head, _ = _fitted_kappa_head(counts=[2, 4, 8], spread=[0.5, 0.5, 0.5])
    m = head.margins.tolist()
    assert m[0] > m[1] > m[2]


def test_kappaface_k_scale_and_initial_margins() -> None:
    head = KappaFaceHead(D, 3, class_counts=COUNTS)
    w_s = [(math.cos(math.pi * n / 6) + 1) / 2 for n in COUNTS]
    # before any estimate κ̃ = 0 -> w^k = 1/2
    assert head.margins.tolist() == pytest.approx([0.8 * (0.7 * s + 0.3 * 0.5) for s in w_s], rel=1e-5)
    head = KappaFaceHead(D, 3, class_counts=COUNTS, k_scale=1.05)
    assert float(head.sample_weight[2]) == pytest.approx((math.cos(math.pi / 1.05) + 1) / 2, rel=1e-5)
    assert float(head.sample_weight[2]) > 0


def test_kappaface_target_logit_uses_class_margin_and_fallback() -> None:
    head, _ = _fitted_kappa_head()
    with torch.no_grad():
        head.weight.copy_(torch.eye(3))
    head.eval()
    m = head.margins.tolist()
    for c, theta in ((0, 0.4), (2, 1.1)):
        e = [0.0, 0.0, 0.0]
        e[c], e[(c + 1) % 3] = math.cos(theta), math.sin(theta)
        logit = float(head(torch.tensor([e]), torch.tensor([c]))[0, c].detach())
        assert logit == pytest.approx(S * math.cos(theta + m[c]), abs=2e-3)
    # θ + m > π: ArcFace's monotonic fallback with the class margin
    theta = math.pi - 0.05
    e = [math.cos(theta), math.sin(theta), 0.0]
    logit = float(head(torch.tensor([e]), torch.tensor([0]))[0, 0].detach())
    assert logit == pytest.approx(S * (math.cos(theta) - m[0] * math.sin(m[0])), abs=2e-3)


def test_kappaface_memory_ema_and_when_it_updates() -> None:
    head = KappaFaceHead(2, 2, class_counts=[1, 1])
    z1, z2 = _emb(0.0), _emb(math.pi / 2)
    head.train()
    head(z1, torch.tensor([1]), torch.tensor([0]))
    assert head.memory[0].tolist() == pytest.approx([1.0, 0.0])  # first sight: z̄ = z
    assert head.memory_labels.tolist() == [1, -1]
    head(z2, torch.tensor([1]), torch.tensor([0]))
    assert head.memory[0].tolist() == pytest.approx([0.7, 0.3])  # α z̄ + (1 − α) z
    before = head.memory.clone()
    head(z1, torch.tensor([1]), None)  # no indices: no update
    head.eval()
    head(z1, torch.tensor([1]), torch.tensor([0]))  # eval: no update
    assert torch.equal(head.memory, before)


def test_kappaface_state_is_checkpointed() -> None:
    head, _ = _fitted_kappa_head()
    state = head.state_dict()
    assert {"memory", "memory_labels", "margins", "kappa", "class_counts"} <= set(state)
    fresh = KappaFaceHead(D, 3, class_counts=COUNTS)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.margins, head.margins) and torch.equal(fresh.memory, head.memory)


# ------------------------------------------------------------------ Partial FC
def _heads(num_classes: int) -> list[torch.nn.Module]:
    counts = list(range(1, num_classes + 1))
    return [
        SoftmaxHead(16, num_classes),
        NormFaceHead(16, num_classes),
        CosFaceHead(16, num_classes),
        ArcFaceHead(16, num_classes),
        CombinedMarginHead(16, num_classes),
        KappaFaceHead(16, num_classes, class_counts=counts),
    ]


@pytest.mark.parametrize(
    "idx", range(6), ids=["softmax", "normface", "cosface", "arcface", "combined", "kappaface"]
)
def test_partial_fc_rate_one_equals_full_head(idx: int) -> None:
    torch.manual_seed(idx)
    full = _heads(40)[idx].train()
    wrapped_inner = _heads(40)[idx]
    wrapped_inner.load_state_dict(full.state_dict())
    pfc = PartialFC(wrapped_inner, sample_rate=1.0).train()
    x, y, i = torch.randn(8, 16), torch.randint(0, 40, (8,)), torch.arange(8)
    assert torch.equal(pfc(x, y, i), full(x, y, i))
    for key, value in full.state_dict().items():
        assert torch.equal(pfc.head.state_dict()[key], value), key


def test_partial_fc_always_keeps_positives_and_remaps_labels() -> None:
    pfc = PartialFC(ArcFaceHead(16, 100), sample_rate=0.2).train()
    for seed in range(50):
        torch.manual_seed(seed)
        y = torch.randint(0, 100, (12,))
        y[0] = -1
        class_ids, local = pfc.sample(y)
        assert class_ids.numel() == 20 and torch.equal(class_ids, class_ids.unique())
        assert set(y[y >= 0].tolist()) <= set(class_ids.tolist())
        assert torch.equal(class_ids[local[1:]], y[1:]) and local[0] == -1
    # more distinct positives than the sample size: all positives, nothing else
    y = torch.arange(0, 60, 2)
    class_ids, local = PartialFC(ArcFaceHead(16, 100), sample_rate=0.1).sample(y)
    assert torch.equal(class_ids, y) and torch.equal(local, torch.arange(30))


@pytest.mark.parametrize("idx", [3, 5], ids=["arcface", "kappaface"])
def test_partial_fc_sampled_logits_equal_full_head_columns(idx: int) -> None:
    torch.manual_seed(0)
    head = _heads(50)[idx]
    if isinstance(head, KappaFaceHead):
        with torch.no_grad():
            head.margins.copy_(torch.linspace(0.1, 0.7, 50))  # distinct per-class margins
    pfc = PartialFC(head, sample_rate=0.3).train()
    x, y = torch.randn(6, 16), torch.tensor([3, 7, 7, 41, 0, 49])
    torch.manual_seed(1)
    compact, local, ids = pfc.forward_sampled(x, y)
    reference = head.eval()(x, y)  # full head, no memory update
    assert torch.allclose(compact, reference[:, ids], atol=1e-5)
    torch.manual_seed(1)
    wide = pfc.train()(x, y)
    assert torch.allclose(wide[:, ids], compact)
    unsampled = torch.ones(50, dtype=torch.bool)
    unsampled[ids] = False
    assert torch.all(wide[:, unsampled] == pfc.fill_value)
    # the wide form is a drop-in for cross-entropy with global labels
    assert float(F.cross_entropy(wide, y).detach()) == pytest.approx(
        float(F.cross_entropy(compact, local).detach()), rel=1e-6
    )


def test_partial_fc_unsampled_centres_get_no_gradient_and_eval_uses_all() -> None:
    torch.manual_seed(0)
    pfc = PartialFC(ArcFaceHead(16, 50), sample_rate=0.2).train()
    x, y = torch.randn(4, 16), torch.tensor([1, 2, 3, 4])
    torch.manual_seed(0)
    _, _, ids = pfc.forward_sampled(x, y)
    torch.manual_seed(0)
    _, _, ids2 = pfc.forward_sampled(x, y)
    torch.manual_seed(0)
    F.cross_entropy(pfc(x, y), y).backward()
    grad_rows = pfc.head.weight.grad.abs().sum(1) > 0
    assert torch.equal(ids, ids2)
    assert set(torch.nonzero(grad_rows).flatten().tolist()) <= set(ids.tolist())
    pfc.eval()
    assert torch.equal(pfc(x, y), pfc.head(x, y))


def test_partial_fc_with_kappaface_updates_memory_with_global_labels() -> None:
    head = KappaFaceHead(16, 50, class_counts=[2] * 50)
    pfc = PartialFC(head, sample_rate=0.1).train()
    y = torch.tensor([45, 3, 17])
    pfc(torch.randn(3, 16), y, torch.tensor([5, 6, 7]))
    assert head.memory_labels[5:8].tolist() == y.tolist()
    assert torch.equal(pfc.margins, head.margins)  # attribute pass-through for logging
    assert pfc.update_margins().shape == (50,)


# ------------------------------------------------------------------ registry
def test_registry_builds_every_head_with_hparams() -> None:
    assert list_heads() == ["arcface", "combined", "cosface", "kappaface", "normface", "softmax"]
    for name in list_heads():
        kw = {"class_counts": [1, 2, 3]} if name == "kappaface" else {}
        head = build_head(name, 8, 3, **kw)
        hp = head.hparams()
        assert hp["name"] == name and hp["num_classes"] == 3 and hp["embedding_size"] == 8
    assert build_head("arcface", 8, 3, s=30.0, m=0.3).hparams()["m"] == 0.3
    wrapped = build_head("cosface", 8, 100, sample_rate=0.1)
    assert isinstance(wrapped, PartialFC) and wrapped.hparams()["partial_fc_sample_rate"] == 0.1
    assert isinstance(build_head("arcface", 8, 3, sample_rate=1.0), ArcFaceHead)
    with pytest.raises(KeyError, match="unknown head"):
        build_head("adaface", 8, 3)


# ------------------------------------------------------------------ KappaFace under DDP
def _ddp_kappa_worker(rank: int, world: int, port: int, queue) -> None:  # pragma: no cover - child process
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        torch.manual_seed(0)
        head = KappaFaceHead(4, 3, class_counts=[2, 2, 2]).train()
        x = torch.randn(3, 4, generator=torch.Generator().manual_seed(100 + rank))  # different data per rank
        head(x, torch.tensor([0, 1, 2]), torch.tensor([0, 2, 4]) + rank)
        head.update_margins()
        # Plain lists, not tensors: a tensor would travel as a shared-memory handle that dies
        # with this process if it exits before the parent reads it.
        queue.put((rank, head.memory.tolist(), head.memory_labels.tolist(), head.margins.tolist()))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_kappaface_memory_is_identical_on_every_ddp_rank() -> None:
    """Each rank sees different samples; after the all-gather every rank holds all of them."""
    from training.spawn import run_ranks

    results = sorted(run_ranks(_ddp_kappa_worker, 2, timeout=120), key=lambda r: r[0])
    (_, mem0, lab0, marg0), (_, mem1, lab1, marg1) = results
    assert lab0 == [0, 0, 1, 1, 2, 2]  # rank 0 wrote 0, 2, 4; rank 1 wrote 1, 3, 5
    assert mem0 == mem1 and lab0 == lab1 and marg0 == marg1
    assert torch.allclose(torch.tensor(mem0).norm(dim=1), torch.ones(6))


@pytest.mark.parametrize("name", ["cosface", "arcface", "combined", "kappaface"])
def test_margin_heads_pass_gradcheck(name: str) -> None:
    """The in-place target replacement gives exact gradients (float64 finite differences)."""
    torch.manual_seed(0)
    kw = {"class_counts": [1, 2, 3, 4]} if name == "kappaface" else {}
    head = build_head(name, 5, 4, **kw).double().eval()
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 3, 1])
    assert torch.autograd.gradcheck(
        lambda e, w: _with_weight(head, w)(e, y), (x, head.weight.detach().clone().requires_grad_())
    )


def test_combined_acos_path_passes_gradcheck() -> None:
    torch.manual_seed(0)
    head = build_head("combined", 5, 4, m1=1.4, m2=0.1, m3=0.1).double()
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda e: head(e, torch.tensor([0, 3, 1])), (x,))


def _with_weight(head: torch.nn.Module, weight: torch.Tensor):
    def run(e: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(head, {"weight": weight}, (e, y))

    return run
