"""Identity-folder datasets: ``root/<identity>/<image>``.

Already aligned 112x112 crops (like ``lfw112``) are read as they are. Raw photos
go once through the service's own detector + 5-point alignment (the preprocessing
contract lives in ``service/``; training must not re-implement it) and the crops
are cached under ``cache_dir`` with a manifest, so later runs skip detection.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from training.data.base import CropDataset
from training.data.transforms import Augment

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
CROP_SIZE = 112


def list_identity_folders(
    root: Path, people: Iterable[str] | None = None, min_images: int = 1
) -> list[tuple[str, list[Path]]]:
    """Sorted ``(identity, files)`` for the identity folders under ``root`` (optionally a given list)."""
    root = Path(root)
    names = sorted(people) if people is not None else sorted(p.name for p in root.iterdir() if p.is_dir())
    out = []
    for name in names:
        folder = root / name
        if not folder.is_dir():
            continue
        files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_EXTS)
        if len(files) >= min_images:
            out.append((name, files))
    return out


def service_aligner() -> Callable[[bytes], np.ndarray | None]:
    """The service's own "aligned crop or detect + align" path; the largest face wins.

    Imported lazily: identity folders of ready crops never need the detector.
    """
    from service.contract import aligner

    return aligner()


def prepare_aligned(
    root: Path,
    cache_dir: Path,
    people: Iterable[str] | None = None,
    aligner: Callable[[bytes], np.ndarray | None] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Make every image under ``root`` available as an aligned 112x112 crop.

    112x112 images are taken as already aligned and referenced in place; others are
    detected and aligned once, written to ``cache_dir`` (JPEG q95) and listed in
    ``cache_dir/manifest.json`` (``{relative path: cached path | null}``; null =
    no face found). A second call only processes files missing from the manifest.
    """
    from tqdm import tqdm

    root, cache_dir = Path(root), Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = cache_dir / "manifest.json"
    manifest: dict[str, str | None] = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    todo = [
        f
        for _, files in list_identity_folders(root, people)
        for f in files
        if str(f.relative_to(root)) not in manifest
    ]
    align = aligner
    for f in tqdm(todo, desc="aligning faces", disable=not progress, unit="img"):
        rel = str(f.relative_to(root))
        img = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if img is not None and img.shape[:2] == (CROP_SIZE, CROP_SIZE):
            manifest[rel] = str(f)
            continue
        if align is None:
            align = service_aligner()
        crop = align(f.read_bytes())
        if crop is None:
            manifest[rel] = None
            continue
        out = cache_dir / Path(rel).with_suffix(".jpg")
        out.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out), crop, [cv2.IMWRITE_JPEG_QUALITY, 95])
        manifest[rel] = str(out)
    tmp = manifest_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=0, sort_keys=True))
    tmp.replace(manifest_path)
    return manifest


class ImageFolderDataset(CropDataset):
    """Identity folders of face images; label = position of the identity in sorted order.

    ``aligned=True`` trusts every file to be a 112x112 aligned crop (fast: no scan).
    ``aligned=False`` runs :func:`prepare_aligned` into ``cache_dir`` first (default
    ``data/aligned/<root name>``, git-ignored).
    """

    def __init__(
        self,
        root: Path,
        people: Iterable[str] | None = None,
        min_images: int = 1,
        max_people: int | None = None,
        aligned: bool = True,
        cache_dir: Path | None = None,
        augment: Augment | None = None,
        progress: bool = True,
    ) -> None:
        self.root = Path(root)
        self.augment = augment
        folders = list_identity_folders(self.root, people, min_images)
        if max_people is not None:
            folders = folders[:max_people]
        if not aligned:
            manifest = prepare_aligned(
                self.root,
                # default beside the run, never inside the (possibly shared, read-only) data folder
                cache_dir or Path("data") / "aligned" / self.root.name,
                [n for n, _ in folders],
                progress=progress,
            )
            folders = [
                (
                    n,
                    [
                        Path(manifest[str(f.relative_to(self.root))])
                        for f in files
                        if manifest.get(str(f.relative_to(self.root)))
                    ],
                )
                for n, files in folders
            ]
            folders = [(n, fs) for n, fs in folders if len(fs) >= min_images]
        self.classes = [n for n, _ in folders]
        self.files = [f for _, fs in folders for f in fs]
        self.labels = np.asarray([i for i, (_, fs) in enumerate(folders) for _ in fs], dtype=np.int64)

    def load(self, index: int) -> tuple[np.ndarray, int]:
        path = self.files[index]
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise OSError(f"cannot decode {path}")
        if img.shape[:2] != (CROP_SIZE, CROP_SIZE):
            raise ValueError(
                f"{path} is {img.shape[1]}x{img.shape[0]}, not an aligned 112x112 crop; use aligned=False"
            )
        return img, int(self.labels[index])

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        out["root"] = str(self.root)
        return out
