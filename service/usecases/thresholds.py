"""Which decision threshold a comparison uses, and why: said in every answer.

Order: the request's own threshold, else the operator's fixed override
(``FACEGATE_THRESHOLD_OVERRIDE``), else the model card's calibrated threshold at the
configured FAR target (the card's entry closest on a log scale).
"""

from __future__ import annotations

from dataclasses import dataclass

from service.cards import Registry
from service.errors import ModelUncalibrated


@dataclass(frozen=True)
class Threshold:
    value: float
    source: str  # "request", "config FACEGATE_THRESHOLD_OVERRIDE", "card FAR 1e-3", "card default"


def card_threshold(registry: Registry, settings, model: str, far: float | None = None) -> Threshold:
    """The operator's override, else the card's threshold at ``far`` (default: the configured target)."""
    if settings.threshold_override is not None:
        return Threshold(float(settings.threshold_override), "config FACEGATE_THRESHOLD_OVERRIDE")
    card = registry.get(model)
    if card.thresholds is None:
        raise ModelUncalibrated(card.name)
    value, source = card.thresholds.for_far(far or settings.far_target)
    return Threshold(float(value), source)


def decision_threshold(registry: Registry, settings, model: str, requested: float | None) -> Threshold:
    """The request's own threshold when it sends one (0 included), else :func:`card_threshold`."""
    if requested is not None:
        return Threshold(float(requested), "request")
    return card_threshold(registry, settings, model)
