"""``facegate detect|embed|compare``: the API's use cases on local files, no server needed."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from service.cli.common import DetectorOpt, JsonOpt, RecognizerOpt, app, console, fail, pipeline
from service.errors import FacegateError


def _image(path: Path):
    from service.pipeline.prepare import ImageInput

    return ImageInput(path.read_bytes(), "image", path.name)


@app.command()
def detect(
    image: Path = typer.Argument(..., exists=True, dir_okay=False),
    detector: str | None = DetectorOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Detect faces: bbox, 5 landmarks, score, quality."""
    from service import usecases as uc

    p = pipeline(detector)
    try:
        d = uc.detect(p, _image(image), detector=detector)
    except FacegateError as e:
        fail(e, as_json)
    if as_json:
        print(json.dumps({"faces": [f.to_dict() for f in d.faces], "model": d.model}))
        return
    t = Table(title=f"{len(d.faces)} face(s) — {d.model}")
    for col in ("#", "bbox x,y,w,h", "landmarks (eyes, nose, mouth corners)", "score", "size", "yaw", "blur"):
        t.add_column(col)
    for i, f in enumerate(d.faces):
        r = f.to_dict()
        q = r["quality"]
        marks = " ".join(f"({x:.0f},{y:.0f})" for x, y in r["landmarks"]) if r.get("landmarks") else "-"
        t.add_row(str(i), ", ".join(f"{v:.0f}" for v in r["bbox"]), marks, f"{r['score']:.3f}",
                  f"{q.get('size', 0):.0f}", f"{q.get('yaw', float('nan')):.0f}", f"{q.get('blur', 0):.0f}")
    console.print(t)


@app.command()
def embed(
    image: Path = typer.Argument(..., exists=True, dir_okay=False),
    detector: str | None = DetectorOpt,
    recognizer: str | None = RecognizerOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Embedding of every face in the image (largest first)."""
    from service import usecases as uc

    p = pipeline(detector, recognizer)
    try:
        e = uc.embed(p, [_image(image)])
    except FacegateError as err:
        fail(err, as_json)
    faces = [{**ef.face.to_dict(), "embedding": [round(float(x), 6) for x in ef.embedding]} for ef in e.faces]
    if as_json:
        print(json.dumps({"faces": faces, "model": e.model}))
    else:
        for i, f in enumerate(faces):
            console.print(f"face {i} bbox={f['bbox']} dim={len(f['embedding'])} {f['embedding'][:4]}…")


@app.command()
def compare(
    image1: Path = typer.Argument(..., exists=True, dir_okay=False),
    image2: Path = typer.Argument(..., exists=True, dir_okay=False),
    detector: str | None = DetectorOpt,
    recognizer: str | None = RecognizerOpt,
    threshold: float | None = typer.Option(None, min=-1, max=1, help="Decision threshold (default: the card's)."),
    as_json: bool = JsonOpt,
) -> None:
    """Are the largest faces of two images the same person? (the API's verify)"""
    from service import usecases as uc

    p = pipeline(detector, recognizer)
    try:
        v = uc.verify(p, None, uc.EVERYTHING, _image(image1), image2=_image(image2), threshold=threshold)
    except FacegateError as e:
        fail(e, as_json)
    out = {"similarity": round(v.similarity, 6), "threshold": v.threshold, "threshold_source": v.threshold_source,
           "same": v.same, "model": v.model}
    if as_json:
        print(json.dumps(out))
    else:
        verdict = "[green]same person[/green]" if v.same else "[yellow]different people[/yellow]"
        console.print(f"similarity {v.similarity:.4f} vs threshold {v.threshold:.4f} ({v.threshold_source}): {verdict}")
