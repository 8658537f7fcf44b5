"""``facegate train | eval | export``: registered on the service's typer app via the
``facegate.commands`` entry point, so the service never imports training code.

torch is imported inside the command bodies only: ``facegate --help`` and the
service commands must work on an install without the [train] extra.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer


def _parse_overrides(items: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for item in items:
        key, _, raw = item.partition("=")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def model_arg(value: str, models_dir: Path | None) -> tuple[str, Path | None]:
    """``--model`` as a registered name (``my-model``) or a model folder (``models/my-model``,
    what export prints): a folder holding ``model.json`` is read from its parent folder."""
    path = Path(value)
    if len(path.parts) > 1 or path.is_dir():
        if not (path / "model.json").is_file():
            raise typer.BadParameter(f"{value} is not a model folder (no {path / 'model.json'})", param_hint="--model")
        return path.name, path.parent
    return value, models_dir


def register(app: typer.Typer) -> None:
    """Add the training commands to the main ``facegate`` app."""

    @app.command("train")
    def train_cmd(
        config: Path = typer.Option(  # noqa: B008
            ..., "--config", "-c", exists=True, help="TOML/JSON/YAML TrainConfig file."
        ),
        resume: Path | None = typer.Option(None, help="Checkpoint file or run folder to continue from."),  # noqa: B008
        set_: list[str] = typer.Option(  # noqa: B008
            [], "--set", help="Override a key: --set optim.lr=0.05 (value as JSON)."
        ),
    ) -> None:
        """Train a recognizer (single process; launch `torchrun -m training.train` for DDP)."""
        from training.config import load_config
        from training.train import train

        cfg = load_config(config, _parse_overrides(set_))
        res = train(cfg, resume=resume)
        typer.echo(
            json.dumps(
                {
                    "out_dir": str(res.out_dir),
                    "steps": res.steps,
                    "last_checkpoint": str(res.last_checkpoint),
                    "last": str(res.out_dir / "last.pt"),
                    "first_loss": res.losses[0] if res.losses else None,
                    "final_loss": res.losses[-1] if res.losses else None,
                    "evals": res.evals,
                    "seconds": round(res.seconds, 1),
                },
                indent=2,
            )
        )

    @app.command("eval")
    def eval_cmd(
        pairs: Path = typer.Option(..., exists=True, help="pairs.txt / pairsDev*.txt / .csv / .bin"),  # noqa: B008
        root: Path | None = typer.Option(  # noqa: B008
            None, help="Image root for pair paths (default: the file's folder)."
        ),
        model: str | None = typer.Option(
            None, help="Registered model: a name, or its folder (models/NAME) (service embedder)."
        ),
        models_dir: Path | None = typer.Option(None, help="models/ folder (default: settings)."),  # noqa: B008
        onnx: Path | None = typer.Option(None, exists=True, help="Bare ONNX recognizer (service embedder)."),  # noqa: B008
        color: str = typer.Option("RGB", help="--onnx: colour order the model expects."),
        mean: float = typer.Option(127.5, help="--onnx: input mean."),
        std: float = typer.Option(127.5, help="--onnx: input std."),
        checkpoint: Path | None = typer.Option(None, exists=True, help="Training checkpoint (PyTorch path)."),  # noqa: B008
        flip: bool = typer.Option(False, help="Flip-test: embed image + mirror."),
        folds: str | None = typer.Option(None, help="Comma-separated fold ids to keep (e.g. 0,1)."),
        max_pairs: int | None = typer.Option(None, help="Evenly spaced subset of pairs."),
        identification: Path | None = typer.Option(None, help="Also rank-1 over these identity folders."),  # noqa: B008
        people: Path | None = typer.Option(None, help="People file restricting --identification."),  # noqa: B008
        out: Path | None = typer.Option(None, help="Write the full report as JSON."),  # noqa: B008
    ) -> None:
        """Verification (k-fold accuracy, ROC AUC, TAR@FAR) and optional rank-1 identification."""
        from training.evaluate import (
            TorchEmbedder,
            evaluate_identification,
            evaluate_pair_file,
            onnx_file_embedder,
            public,
            service_embedder,
        )

        if sum(x is not None for x in (model, onnx, checkpoint)) != 1:
            raise typer.BadParameter("give exactly one of --model, --onnx, --checkpoint")
        if checkpoint is not None:
            from training.train import load_backbone_from_checkpoint

            emb = TorchEmbedder(load_backbone_from_checkpoint(checkpoint)[0])
        elif onnx is not None:
            emb = onnx_file_embedder(onnx, color, mean, std, flip=flip)
        else:
            name, folder = model_arg(model, models_dir)  # type: ignore[arg-type]
            emb = service_embedder(name, folder, flip=flip)
        fold_ids = [int(f) for f in folds.split(",")] if folds else None
        rep = public(
            evaluate_pair_file(pairs, emb, root=root, flip=flip, folds=fold_ids, max_pairs=max_pairs)
        )
        if identification is not None:
            from training.data.lfw import read_people

            rep["identification"] = evaluate_identification(
                identification, emb, people=read_people(people) if people else None, flip=flip
            )
        t = rep["tar_at_far"]
        typer.echo(
            f"{rep['pairs']}: {rep['n_pairs']} pairs, flip={flip}: accuracy {100 * rep['accuracy']:.2f} % "
            f"(+- {100 * rep['std']:.2f}, {rep['protocol']}), AUC {rep['auc']:.4f}"
        )
        for k, v in t.items():
            typer.echo(
                f"  TAR@FAR {k}: {v['tar']:.4f} at threshold {v['threshold']:.4f}"
                f"{'' if v['resolvable'] else ' (too few different pairs to resolve this FAR)'}"
            )
        if "identification" in rep:
            typer.echo(f"  rank-1: {100 * rep['identification']['rank1']:.2f} %")
        if out:
            out.write_text(json.dumps(rep, indent=2))

    @app.command("export")
    def export_cmd(
        checkpoint: Path = typer.Option(  # noqa: B008
            ..., exists=True, help="Checkpoint file (runs/RUN/last.pt) or run folder."
        ),
        name: str = typer.Option(..., help="Model name: models/<name>/."),
        calib_pairs: Path | None = typer.Option(  # noqa: B008
            None,
            exists=True,
            help="Labelled pairs of people NOT trained on: thresholds for the card. Without them the "
            "model cannot decide until `facegate models calibrate NAME --identities DIR --write`.",
        ),
        calib_root: Path | None = typer.Option(None),  # noqa: B008
        calib_max_pairs: int | None = typer.Option(None, help="Evenly spaced subset of the calib pairs."),
        eval_pairs: list[Path] = typer.Option(  # noqa: B008
            [], help="Extra pair sets reported in the card (with/without flip)."
        ),
        models_dir: Path | None = typer.Option(None, help="default: the service settings' models_dir"),  # noqa: B008
        opset: int = typer.Option(17, min=17),
        simplify: bool = typer.Option(False, help="Run onnxsim (if installed)."),
        fp16: bool = typer.Option(False, help="fp16 weights (needs onnxconverter-common)."),
        licence: str = typer.Option(""),
    ) -> None:
        """ONNX export + parity check + model card (with thresholds when given calibration pairs)."""
        from service.contract import default_models_dir
        from training.export import export_model

        card = export_model(
            checkpoint,
            name,
            models_dir or default_models_dir(),
            calib_pairs,
            calib_root,
            eval_pairs=eval_pairs,
            calib_max_pairs=calib_max_pairs,
            opset=opset,
            do_simplify=simplify,
            fp16=fp16,
            licence=licence,
        )
        typer.echo(
            json.dumps(
                {
                    "name": card["name"],
                    "thresholds": card.get("thresholds"),
                    "parity": card["training"]["parity"],
                },
                indent=2,
            )
        )
        if card.get("thresholds") is None:
            typer.secho(
                f"no --calib-pairs: the card of {name} has NO thresholds. The service refuses it as a "
                "collection's model (model_uncalibrated) and answers verify/identify without a request "
                f"threshold with that error until you run\n  facegate models calibrate {name} "
                "--identities DIR --write\n(DIR: identity folders of people the model was not trained on)",
                fg="yellow",
                err=True,
            )
