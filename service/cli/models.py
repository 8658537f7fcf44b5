"""``facegate models list|inspect|add|calibrate``: the model cards the service trusts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import typer
from rich.table import Table

from service.cli.common import JsonOpt, console, fail, models_app, settings
from service.config import Settings
from service.errors import FacegateError, InvalidRequest

#: All pairs of a few thousand images resolve FARs down to 1e-6 (see ``models calibrate``).
CALIBRATE_FARS = "1e-2,1e-3,1e-4,1e-5,1e-6"


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
    for col in ("name", "kind", "family", "input", "dim", "default", "thresholds", "source"):
        t.add_column(col)
    for c in cards:
        active = "✓" if c.name in (s.detector, s.recognizer) else ""
        src = f"{c.source.package}=={c.source.version}" if c.source.package else (c.source.file or "")
        thr = "" if c.kind == "detector" else ("calibrated" if c.thresholds else "[yellow]none: calibrate[/yellow]")
        t.add_row(c.name, c.kind, c.family, f"{c.input.size[0]}x{c.input.size[1]} {c.input.color}",
                  str(c.embedding_size or ""), active, thr, src)
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
        fail(e, as_json)
    out = {"card": card.model_dump(mode="json", exclude_none=True), "weights": str(path), "loaded": loaded}
    print(json.dumps(out, indent=None if as_json else 2))


@models_app.command("add")
def models_add(
    path: Path = typer.Argument(..., exists=True, dir_okay=False, help="ONNX file to register."),
    name: str = typer.Option(..., help="Model name ([a-z0-9._-])."),
    preset: str = typer.Option("arcface", help="Recognizer input convention: arcface, sface, adaface, paddle."),
    color: str | None = typer.Option(None, help="Override colour order (RGB/BGR)."),
    mean: float | None = typer.Option(None),
    std: float | None = typer.Option(None),
    threshold: float | None = typer.Option(None, min=-1, max=1, help="Default cosine threshold."),
    identities: Path | None = typer.Option(  # noqa: B008
        None, exists=True, file_okay=False,
        help="Calibrate thresholds now on this folder of identity folders (people the model never saw)."),
    licence: str = typer.Option("", help="Licence of the weights."),
    link: bool = typer.Option(False, help="Reference the file where it is instead of copying it."),
    models_dir: Path | None = typer.Option(None, help="Default: FACEGATE_MODELS_DIR."),
    force: bool = typer.Option(False, help="Replace an existing card."),
) -> None:
    """Inspect an ONNX file and write its model card (copying the weights beside it)."""
    from service.cards import Registry
    from service.modelinspect import PRESETS, card_from_onnx

    reg = Registry(settings(models_dir).models_dir)
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
        fail(e, False)
    console.print(f"wrote {out}: {card.kind} / {card.family}, input {card.input.size} {card.input.color}, "
                  f"batch {card.input.batch}" + (f", {card.embedding_size}-d" if card.embedding_size else ""))
    if card.kind != "recognizer" or card.thresholds is not None:
        return
    if identities is not None:
        _print_calibration(calibrate(name, identities, write=True, models_dir=reg.models_dir))
        return
    console.print(
        f"[yellow]{name} has no thresholds[/yellow]: it is registered but cannot decide verify/identify "
        "(collections refuse it with model_uncalibrated) until you calibrate it:\n"
        f"  facegate models calibrate {name} --identities DIR --write\n"
        "(DIR: a folder of identity folders, photos or aligned crops, of people the model never saw)")


@models_app.command("calibrate")
def models_calibrate(
    name: str = typer.Argument(..., help="Registered recognizer."),
    identities: Path = typer.Option(..., exists=True, file_okay=False,
                                    help="Folder of identity folders (<person>/<image>) of people the model never saw."),
    fars: str = typer.Option(CALIBRATE_FARS, help="FAR targets."),
    max_images: int = typer.Option(0, help="Use at most this many images (0 = all)."),
    write: bool = typer.Option(False, "--write", help="Store the thresholds in the model card."),
    as_json: bool = JsonOpt,
) -> None:
    """Thresholds at FAR targets from all pairs of a labelled face set (aligned crops or photos).

    Every same-identity pair is genuine and every cross-identity pair an impostor, so
    a few thousand images give millions of impostor pairs: enough to set a threshold
    at FAR 1e-5 or 1e-6, which a 3,000-pair protocol file cannot.
    """
    try:
        result = calibrate(name, identities, fars=[float(x) for x in fars.split(",")], max_images=max_images,
                           write=write, progress=not as_json)
    except FacegateError as e:
        fail(e, as_json)
    if as_json:
        print(json.dumps(result))
        return
    _print_calibration(result)


def calibrate(name: str, identities: Path, *, fars: list[float] | None = None, max_images: int = 0,
              write: bool = False, models_dir: Path | None = None, progress: bool = True) -> dict:
    """Embed every image under ``identities/<person>/`` with ``name`` and derive thresholds from all pairs;
    with ``write`` the card keeps them (saved into the models folder, even for a built-in card)."""
    import numpy as np
    from tqdm import tqdm

    from service.calibration import thresholds_from_identities
    from service.cards import Thresholds
    from service.pipeline.pipeline import FacePipeline

    p = FacePipeline(settings(models_dir))
    card = p.registry.get(name, "recognizer")
    emb = p.embedder(name)
    files = sorted(f for f in identities.glob("*/*") if f.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp", ".bmp"})
    if max_images:
        files = files[:: max(1, len(files) // max_images)][:max_images]
    people: dict[str, int] = {}
    vecs, labels, skipped = [], [], 0
    for start in tqdm(range(0, len(files), 64), desc="embedding", unit="batch", disable=not progress):
        crops, labs = [], []
        for f in files[start : start + 64]:
            try:  # an aligned crop of the model's input size as it is, a photo through detect + align
                crops.append(p.prepare(f.read_bytes(), recognizers=(name,), choose="largest",
                                       aligned="auto").crops[name][0])
                labs.append(people.setdefault(f.parent.name, len(people)))
            except FacegateError:
                skipped += 1
        if crops:
            vecs.append(emb.embed(crops))
            labels.extend(labs)
    if len(people) < 2 or len(labels) < 3:
        raise InvalidRequest(f"{identities} holds {len(labels)} usable images of {len(people)} people: calibration "
                             "needs identity folders of at least 2 people and a person with 2 images")
    result = thresholds_from_identities(
        np.concatenate(vecs), labels, list(fars or [float(x) for x in CALIBRATE_FARS.split(",")]),
        source=f"all pairs of {len(labels)} images of {len(people)} people in {identities.name}",
        default_far=p.settings.far_target,
    )
    result["skipped_images"] = skipped
    if write:
        p.registry.save(card.model_copy(update={
            "thresholds": Thresholds(**result["thresholds"]),
            "accuracy": {**card.accuracy, f"tar_at_far_{identities.name}": result["tar_at_far"]},
        }))
    result["written"] = bool(write)
    p.close()
    return result


def _print_calibration(result: dict) -> None:
    t = Table(title=result["thresholds"]["source"])
    for col in ("FAR", "threshold", "TAR"):
        t.add_column(col)
    for k, v in result["tar_at_far"].items():
        t.add_row(k, f"{v['threshold']:.4f}", f"{v['tar']:.4f}" + ("" if v["resolvable"] else " (unresolved)"))
    console.print(t)
    if result.get("written"):
        console.print("thresholds written to the model card")
