"""The README documents every configuration knob the code has."""

from pathlib import Path

from service.config import settings_table

README = Path(__file__).resolve().parent.parent / "README.md"


def test_every_setting_is_in_the_readme() -> None:
    text = README.read_text()
    missing = [env for env, _, _ in settings_table(None) if f"`{env}`" not in text]
    assert not missing, f"README.md lacks {missing}; regenerate with `facegate config --markdown`"


def test_service_imports_without_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, service.api.app, service.cli, service.pipeline.pipeline, service.gallery.gallery;"
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0, "the service package imported torch"


def test_benchmark_results_hold_repository_relative_paths() -> None:
    """Result files travel with the repository: no machine's absolute paths in them."""
    import re

    results = README.parent / "bench" / "results"
    absolute = re.compile(r"(?<![\w.])/(?:work|tmp|root|home|Users|private)/")
    offenders = [p.name for p in results.iterdir() if p.suffix in (".json", ".md") and absolute.search(p.read_text())]
    assert not offenders, f"absolute paths in {offenders}: write paths with bench.common.rel()"


def test_architecture_doc_names_every_service_module_and_nothing_missing() -> None:
    """docs/architecture.md is the map: every service module is on it, every path on it exists."""
    import re

    root = README.parent
    doc = (root / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"`((?:service|devkit|training|bench|tests|docs)/[\w/.-]*)`", doc))
    missing_files = sorted(p for p in named if not (root / p).exists())
    assert not missing_files, f"docs/architecture.md names paths that do not exist: {missing_files}"
    files = [p for p in (root / "service").rglob("*.py") if "migrations" not in p.parts]
    unnamed = sorted(rel for p in files if (rel := str(p.relative_to(root))) not in named and f"`{p.name}`" not in doc)
    assert not unnamed, f"service modules missing from docs/architecture.md: {unnamed}"
