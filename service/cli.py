"""``facegate`` command line: serve, run the pipeline on files, manage model cards.

Other packages add command groups through the ``facegate.commands`` entry point
(training registers train/eval/export), so this module never imports them.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from service.config import Settings
from service.errors import FacegateError

app = typer.Typer(help="facegate: face verification and identification.", no_args_is_help=True, add_completion=False)
models_app = typer.Typer(help="List, inspect and add model cards.", no_args_is_help=True)
app.add_typer(models_app, name="models")
from service.api.keys_cli import keys_app  # noqa: E402 - typer group; imports nothing heavy

app.add_typer(keys_app, name="keys")
console = Console()

DetectorOpt = typer.Option(None, "--detector", help="Detector model name (default: FACEGATE_DETECTOR).")
RecognizerOpt = typer.Option(None, "--recognizer", help="Recognizer model name (default: FACEGATE_RECOGNIZER).")
JsonOpt = typer.Option(False, "--json", help="Machine-readable JSON output.")


def _settings(models_dir: Path | None = None) -> Settings:
    s = Settings()
    return s.model_copy(update={"models_dir": models_dir}) if models_dir else s


def _pipeline(detector: str | None, recognizer: str | None):
    from service.pipeline.pipeline import FacePipeline

    s = _settings()
    upd = {k: v for k, v in {"detector": detector, "recognizer": recognizer}.items() if v}
    return FacePipeline(s.model_copy(update=upd) if upd else s)


def _fail(e: FacegateError, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"error": {"code": e.code, "message": e.message}}))
    else:
        console.print(f"[red]error[/red] {e.code}: {e.message}")
    raise typer.Exit(2)


@app.command()
def serve(
    host: Optional[str] = typer.Option(None, help="Bind address (default FACEGATE_HOST, 127.0.0.1)."),
    port: Optional[int] = typer.Option(None, help="Port (default FACEGATE_PORT, 8000)."),
    workers: Optional[int] = typer.Option(None, help="Worker processes (default FACEGATE_WORKERS, 1)."),
) -> None:
    """Run the REST API with uvicorn."""
    import uvicorn

    s = Settings()
    uvicorn.run(
        "service.api.app:create_app",
        factory=True,
        host=host or s.host,
        port=port or s.port,
        workers=workers or s.workers,
        log_level=s.log_level,
    )


@app.command()
def config(
    markdown: bool = typer.Option(False, "--markdown", help="Print the defaults as the README's Markdown table."),
) -> None:
    """Every configuration knob with its current value (secrets masked)."""
    from service.config import settings_table

    if markdown:
        print("| variable | default | what it does |\n|---|---|---|")
        for env, value, desc in settings_table(None):
            print(f"| `{env}` | `{value}` | {desc} |")
        return
    t = Table(title="facegate configuration (FACEGATE_* env vars or .env)")
    for col in ("variable", "value", "what it does"):
        t.add_column(col)
    for row in settings_table(Settings()):
        t.add_row(*row)
    console.print(t)


@app.command()
def detect(
    image: Path = typer.Argument(..., exists=True, dir_okay=False),
    detector: Optional[str] = DetectorOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Detect faces: bbox, 5 landmarks, score, quality."""
    p = _pipeline(detector, None)
    try:
        faces = p.detect(p.decode(image.read_bytes()))
    except FacegateError as e:
        _fail(e, as_json)
    name = detector or p.settings.detector
    if as_json:
        print(json.dumps({"faces": [f.to_dict() for f in faces], "model": name}))
        return
    t = Table(title=f"{len(faces)} face(s) — {name}")
    for col in ("#", "bbox x,y,w,h", "score", "size", "yaw", "blur"):
        t.add_column(col)
    for i, f in enumerate(faces):
        d = f.to_dict()
        q = d["quality"]
        t.add_row(str(i), ", ".join(f"{v:.0f}" for v in d["bbox"]), f"{d['score']:.3f}", f"{q.get('size', 0):.0f}",
                  f"{q.get('yaw', float('nan')):.0f}", f"{q.get('blur', 0):.0f}")
    console.print(t)


@app.command()
def embed(
    image: Path = typer.Argument(..., exists=True, dir_okay=False),
    detector: Optional[str] = DetectorOpt,
    recognizer: Optional[str] = RecognizerOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Embedding of every face in the image (largest first)."""
    p = _pipeline(detector, recognizer)
    try:
        faces = p.analyze(image.read_bytes())
    except FacegateError as e:
        _fail(e, as_json)
    out = {
        "faces": [{**ef.face.to_dict(), "embedding": [round(float(x), 6) for x in ef.embedding]} for ef in faces],
        "model": faces[0].model,
    }
    if as_json:
        print(json.dumps(out))
    else:
        for i, f in enumerate(out["faces"]):
            console.print(f"face {i} bbox={f['bbox']} dim={len(f['embedding'])} {f['embedding'][:4]}…")


@app.command()
def compare(
    image1: Path = typer.Argument(..., exists=True, dir_okay=False),
    image2: Path = typer.Argument(..., exists=True, dir_okay=False),
    detector: Optional[str] = DetectorOpt,
    recognizer: Optional[str] = RecognizerOpt,
    threshold: Optional[float] = typer.Option(None, min=-1, max=1, help="Decision threshold (default: the card's)."),
    as_json: bool = JsonOpt,
) -> None:
    """Are the largest faces of two images the same person?"""
    p = _pipeline(detector, recognizer)
    try:
        a = p.analyze(image1.read_bytes(), largest_only=True)[0]
        b = p.analyze(image2.read_bytes(), largest_only=True)[0]
        thr, source = (threshold, "request") if threshold is not None else p.threshold(recognizer)
    except FacegateError as e:
        _fail(e, as_json)
    sim = float(a.embedding @ b.embedding)
    out = {"similarity": round(sim, 6), "threshold": thr, "threshold_source": source, "same": sim >= thr, "model": a.model}
    if as_json:
        print(json.dumps(out))
    else:
        verdict = "[green]same person[/green]" if out["same"] else "[yellow]different people[/yellow]"
        console.print(f"similarity {sim:.4f} vs threshold {thr:.4f} ({source}): {verdict}")


# --- models ------------------------------------------------------------------------------------------
@models_app.command("list")
def models_list(as_json: bool = JsonOpt) -> None:
    """Model cards in FACEGATE_MODELS_DIR."""
    from service.cards import Registry

    s = Settings()
    cards = Registry(s.models_dir).cards()
    if as_json:
        print(json.dumps([c.model_dump(mode="json", exclude_none=True) for c in cards]))
        return
    t = Table(title=str(s.models_dir))
    for col in ("name", "kind", "family", "input", "dim", "default", "source"):
        t.add_column(col)
    for c in cards:
        active = "✓" if c.name in (s.detector, s.recognizer) else ""
        src = f"{c.source.package}=={c.source.version}" if c.source.package else (c.source.file or "")
        t.add_row(c.name, c.kind, c.family, f"{c.input.size[0]}x{c.input.size[1]} {c.input.color}",
                  str(c.embedding_size or ""), active, src)
    console.print(t)


@models_app.command("inspect")
def models_inspect(name: str, as_json: bool = JsonOpt) -> None:
    """Show a card, verify the weights' sha256 and load the model."""
    from service.pipeline.pipeline import FacePipeline

    s = Settings()
    p = FacePipeline(s)
    try:
        card = p.card(name)
        path = p.registry.weights_path(card)
        (p.detector if card.kind == "detector" else p.embedder)(name)
        loaded = p.loaded_models()[name]
    except FacegateError as e:
        _fail(e, as_json)
    out = {"card": card.model_dump(mode="json", exclude_none=True), "weights": str(path), "loaded": loaded}
    print(json.dumps(out, indent=None if as_json else 2))


PRESETS = {
    # colour, mean, std — the conventions of each model family (FACTS.md).
    "arcface": ("RGB", 127.5, 127.5),
    "sface": ("RGB", 0.0, 1.0),
    "adaface": ("BGR", 127.5, 127.5),
    "paddle": ("BGR", 127.5, 128.0),
}


@models_app.command("add")
def models_add(
    path: Path = typer.Argument(..., exists=True, dir_okay=False, help="ONNX file to register."),
    name: str = typer.Option(..., help="Model name ([a-z0-9._-])."),
    preset: str = typer.Option("arcface", help=f"Recognizer input convention: {', '.join(PRESETS)}."),
    color: Optional[str] = typer.Option(None, help="Override colour order (RGB/BGR)."),
    mean: Optional[float] = typer.Option(None),
    std: Optional[float] = typer.Option(None),
    threshold: Optional[float] = typer.Option(None, min=-1, max=1, help="Default cosine threshold."),
    licence: str = typer.Option("", help="Licence of the weights."),
    link: bool = typer.Option(False, help="Reference the file where it is instead of copying it."),
    models_dir: Optional[Path] = typer.Option(None, help="Default: FACEGATE_MODELS_DIR."),
    force: bool = typer.Option(False, help="Replace an existing card."),
) -> None:
    """Inspect an ONNX file and write its model card (copying the weights beside it)."""
    from service.cards import Registry
    from service.modelinspect import card_from_onnx

    reg = Registry(_settings(models_dir).models_dir)
    try:
        if reg.card_path(name).exists() and not force:
            console.print(f"[red]model {name} exists[/red] (use --force)")
            raise typer.Exit(2)
        if preset not in PRESETS:
            console.print(f"[red]unknown preset {preset}[/red]")
            raise typer.Exit(2)
        c, m, s = PRESETS[preset]
        card = card_from_onnx(path, name, color=color or c, mean=m if mean is None else mean,
                              std=s if std is None else std, threshold=threshold, licence=licence, family_hint=preset)
        if link:
            card.source.file = str(path.resolve())
        else:
            dest = reg.models_dir / name / "model.onnx"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
            card.source.file = "model.onnx"
        out = reg.save(card)
    except FacegateError as e:
        _fail(e, False)
    console.print(f"wrote {out}: {card.kind} / {card.family}, input {card.input.size} {card.input.color}, "
                  f"batch {card.input.batch}" + (f", {card.embedding_size}-d" if card.embedding_size else ""))


@models_app.command("calibrate")
def models_calibrate(
    name: str = typer.Argument(..., help="Registered recognizer."),
    identities: Path = typer.Option(..., exists=True, file_okay=False,
                                    help="Folder of identity folders (<person>/<image>) of people the model never saw."),
    fars: str = typer.Option("1e-2,1e-3,1e-4,1e-5,1e-6", help="FAR targets."),
    max_images: int = typer.Option(0, help="Use at most this many images (0 = all)."),
    write: bool = typer.Option(False, "--write", help="Store the thresholds in the model card."),
    as_json: bool = JsonOpt,
) -> None:
    """Thresholds at FAR targets from all pairs of a labelled face set (aligned crops or photos).

    Every same-identity pair is genuine and every cross-identity pair an impostor, so
    a few thousand images give millions of impostor pairs: enough to set a threshold
    at FAR 1e-5 or 1e-6, which a 3,000-pair protocol file cannot.
    """
    import numpy as np
    from tqdm import tqdm

    from service.calibration import thresholds_from_identities
    from service.cards import Thresholds
    from service.pipeline.pipeline import FacePipeline

    p = FacePipeline(_settings())
    try:
        card = p.card(name)
        emb = p.embedder(name)
    except FacegateError as e:
        _fail(e, as_json)
    files = sorted(f for f in identities.glob("*/*") if f.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp", ".bmp"})
    if max_images:
        files = files[:: max(1, len(files) // max_images)][:max_images]
    people: dict[str, int] = {}
    vecs, labels, skipped = [], [], 0
    w, h = card.input.size
    for start in tqdm(range(0, len(files), 64), desc="embedding", unit="batch", disable=as_json):
        crops, labs = [], []
        for f in files[start : start + 64]:
            try:
                img = p.decode(f.read_bytes())
                if img.pixels.shape[:2] == (h, w):  # already aligned to the model's template
                    crops.append(img.pixels)
                else:
                    face = p.faces_for_embedding(img)[0]
                    crops.append(p.align(img, face, name))
                labs.append(people.setdefault(f.parent.name, len(people)))
            except FacegateError:
                skipped += 1
        if crops:
            vecs.append(emb.embed(crops))
            labels.extend(labs)
    result = thresholds_from_identities(
        np.concatenate(vecs), labels, [float(x) for x in fars.split(",")],
        source=f"all pairs of {len(labels)} images of {len(people)} people in {identities.name}",
        default_far=p.settings.far_target,
    )
    result["skipped_images"] = skipped
    if write:
        p.registry.save(card.model_copy(update={
            "thresholds": Thresholds(**result["thresholds"]),
            "accuracy": {**card.accuracy, f"tar_at_far_{identities.name}": result["tar_at_far"]},
        }))
    if as_json:
        print(json.dumps(result))
        return
    t = Table(title=result["thresholds"]["source"])
    for col in ("FAR", "threshold", "TAR"):
        t.add_column(col)
    for k, v in result["tar_at_far"].items():
        t.add_row(k, f"{v['threshold']:.4f}", f"{v['tar']:.4f}" + ("" if v["resolvable"] else " (unresolved)"))
    console.print(t)


def _register_plugins() -> None:
    for ep in importlib.metadata.entry_points(group="facegate.commands"):
        try:
            ep.load()(app)
        except ImportError as e:  # e.g. training without the [train] extra
            logging.getLogger("facegate.cli").debug("command group %s unavailable: %s", ep.name, e)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _register_plugins()
    app()


if __name__ == "__main__":
    sys.exit(main())
