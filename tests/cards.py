"""Expected thresholds read straight from the model card files (never through the code
that chooses thresholds, which is what the tests check)."""

from __future__ import annotations

import json
from pathlib import Path

REPO_MODELS = Path(__file__).resolve().parent.parent / "service" / "default_models"
DEFAULT_RECOGNIZER = "sface-2021dec-int8bq"
DEFAULT_FAR_KEY = "1e-3"  # FACEGATE_FAR_TARGET's default


def card_thresholds(recognizer: str = DEFAULT_RECOGNIZER) -> dict:
    return json.loads((REPO_MODELS / recognizer / "model.json").read_text())["thresholds"]


def default_card_threshold(recognizer: str = DEFAULT_RECOGNIZER) -> float:
    """The card's threshold at the default FAR target (what a request without one gets)."""
    return float(card_thresholds(recognizer)["far"][DEFAULT_FAR_KEY])
