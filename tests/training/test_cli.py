"""facegate train / eval / export registered on a typer app (the service CLI does the same via entry point)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import typer
from typer.testing import CliRunner

from training.cli import register


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:  # a group, like the real facegate app
        pass

    register(app)
    return app


def test_commands_are_registered_without_importing_torch() -> None:
    code = (
        "import sys, typer\nfrom training.cli import register\napp = typer.Typer()\n"
        "@app.callback()\ndef r():\n    pass\nregister(app)\n"
        "from typer.main import get_command\nprint(sorted(get_command(app).commands))\nprint('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert out[0] == "['eval', 'export', 'train']" and out[1] == "False"


def test_train_command_with_a_toml_config(tmp_path: Path) -> None:
    cfg = tmp_path / "smoke.toml"
    cfg.write_text(
        f'name = "cli"\nout_dir = "{tmp_path / "run"}"\nepochs = 1\nmax_steps = 2\nbatch_size = 8\nthreads = 1\n'
        '[data]\nnum_workers = 0\n[[data.sources]]\nkind = "synthetic"\nnum_classes = 4\nper_class = 4\n'
        '[model]\nbackbone = "mbf"\nembedding_size = 32\nbackbone_kwargs = {blocks = [1, 1, 1, 1], scale = 1}\n'
        '[head]\nname = "cosface"\n'
    )
    r = CliRunner().invoke(_app(), ["train", "--config", str(cfg), "--set", "optim.lr=0.01"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output[r.output.index("{") :])
    assert out["steps"] == 2 and Path(out["last_checkpoint"]).is_file()
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["optim"]["lr"] == 0.01 and saved["head"]["name"] == "cosface"
    bad = tmp_path / "bad.toml"
    bad.write_text("epochz = 3\n")
    assert CliRunner().invoke(_app(), ["train", "--config", str(bad)]).exit_code != 0  # typos are errors


def test_eval_command_on_onnx(shared_models: Path, lfw_dir: Path, tmp_path: Path) -> None:
    sface = shared_models / "face_recognition_sface_2021dec_int8bq_clean.onnx"
    r = CliRunner().invoke(
        _app(),
        [
            "eval",
            "--pairs",
            str(lfw_dir / "pairs.txt"),
            "--onnx",
            str(sface),
            "--mean",
            "0",
            "--std",
            "1",
            "--folds",
            "0",
            "--max-pairs",
            "60",
            "--out",
            str(tmp_path / "r.json"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "TAR@FAR 1e-2" in r.output
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["n_pairs"] == 60 and rep["accuracy"] > 0.9
