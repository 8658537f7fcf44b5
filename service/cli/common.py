"""What every ``facegate`` command group shares: the Typer app, options, settings, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from service.config import Settings
from service.errors import FacegateError

if TYPE_CHECKING:
    from service.pipeline.pipeline import FacePipeline

app = typer.Typer(help="facegate: face verification and identification.", no_args_is_help=True, add_completion=False)
models_app = typer.Typer(help="List, inspect and add model cards.", no_args_is_help=True)
app.add_typer(models_app, name="models")
console = Console()

DetectorOpt = typer.Option(None, "--detector", help="Detector model name (default: FACEGATE_DETECTOR).")
RecognizerOpt = typer.Option(None, "--recognizer", help="Recognizer model name (default: FACEGATE_RECOGNIZER).")
JsonOpt = typer.Option(False, "--json", help="Machine-readable JSON output.")


def settings(models_dir: Path | None = None, **overrides: object) -> Settings:
    """The configured settings, with command-line overrides (None values ignored)."""
    upd = {k: v for k, v in {"models_dir": models_dir, **overrides}.items() if v is not None}
    s = Settings()
    return s.model_copy(update=upd) if upd else s


def pipeline(detector: str | None = None, recognizer: str | None = None) -> FacePipeline:
    from service.pipeline.pipeline import FacePipeline

    return FacePipeline(settings(detector=detector, recognizer=recognizer))


def fail(e: FacegateError, as_json: bool = False) -> None:
    if as_json:
        print(json.dumps({"error": {"code": e.code, "message": e.message}}))
    else:
        console.print(f"[red]error[/red] {e.code}: {e.message}")
    raise typer.Exit(2)
