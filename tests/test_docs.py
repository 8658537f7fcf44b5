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
