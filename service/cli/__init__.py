"""``facegate`` command line: serve, run the use cases on files, manage model cards and keys.

One module per command group (``faces.py``, ``models.py``, ``keys.py``). Other packages add
command groups through the ``facegate.commands`` entry point (training registers
train/eval/export), so the service never imports them.
"""

from __future__ import annotations

import importlib.metadata
import logging
import sys

import typer
from rich.table import Table

from service.cli import faces, keys, models  # noqa: F401 - each registers its commands on `app`
from service.cli.common import app, console
from service.config import Settings


@app.command()
def serve(
    host: str | None = typer.Option(None, help="Bind address (default FACEGATE_HOST, 127.0.0.1)."),
    port: int | None = typer.Option(None, help="Port (default FACEGATE_PORT, 8000)."),
    workers: int | None = typer.Option(None, help="Worker processes (default FACEGATE_WORKERS, 1)."),
) -> None:
    """Run the REST API with uvicorn."""
    import os

    import uvicorn

    os.umask(0o077)  # everything the service writes (database, snapshots, keys) is private to it
    s = Settings()
    n_workers = workers or s.workers
    if n_workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # /metrics must count every worker's requests, whichever worker answers the scrape
        metrics_dir = s.data_dir / "prometheus"
        metrics_dir.mkdir(parents=True, exist_ok=True)
        for stale in metrics_dir.glob("*.db"):  # counts of a previous run
            stale.unlink()
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    uvicorn.run(
        "service.api.app:create_app",
        factory=True,
        host=host or s.host,
        port=port or s.port,
        workers=n_workers,
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
