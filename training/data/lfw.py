"""LFW protocol files (official release format) -> people lists and labelled pairs.

* View 1 (development): ``peopleDevTrain.txt`` / ``peopleDevTest.txt`` (people-disjoint
  split) and ``pairsDevTrain.txt`` / ``pairsDevTest.txt``.
* View 2 (report): ``pairs.txt``, 10 folds x (300 same + 300 different), header ``10 300``;
  ``people.txt`` lists the 10 people folds.

Image paths are ``<Person>/<Person>_<NNNN>.jpg`` relative to the lfw112 folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pair:
    a: str
    b: str
    same: bool
    fold: int = 0


def image_path(person: str, n: int | str) -> str:
    return f"{person}/{person}_{int(n):04d}.jpg"


def _pair_from_fields(fields: list[str], fold: int) -> Pair:
    if len(fields) == 3:
        return Pair(image_path(fields[0], fields[1]), image_path(fields[0], fields[2]), True, fold)
    if len(fields) == 4:
        return Pair(image_path(fields[0], fields[1]), image_path(fields[2], fields[3]), False, fold)
    raise ValueError(f"bad LFW pair line: {fields}")


def read_pairs(path: Path) -> list[Pair]:
    """Read ``pairs.txt`` (View 2, folds from the header) or ``pairsDev*.txt`` (View 1, one fold).

    The header is ``<folds> <per-class>`` for View 2 (each fold = per-class same pairs
    then per-class different pairs) or a single count for View 1.
    """
    lines = [ln.split() for ln in Path(path).read_text().splitlines() if ln.strip()]
    head = [int(x) for x in lines[0]]
    body = lines[1:]
    if len(head) == 2:
        n_folds, per = head
        if len(body) != n_folds * 2 * per:
            raise ValueError(f"{path}: header says {n_folds}x2x{per} pairs, found {len(body)}")
        return [_pair_from_fields(f, i // (2 * per)) for i, f in enumerate(body)]
    return [_pair_from_fields(f, 0) for f in body]


def read_people(path: Path) -> list[str]:
    """People names of ``peopleDevTrain.txt`` / ``peopleDevTest.txt`` / ``people.txt`` (all folds)."""
    names = []
    for ln in Path(path).read_text().splitlines():
        parts = ln.split()
        if len(parts) == 2 and not parts[0].isdigit():
            names.append(parts[0])
    return names


def read_people_counts(path: Path) -> dict[str, int]:
    """``{person: image count}`` from a people file."""
    out: dict[str, int] = {}
    for ln in Path(path).read_text().splitlines():
        parts = ln.split()
        if len(parts) == 2 and not parts[0].isdigit():
            out[parts[0]] = int(parts[1])
    return out
