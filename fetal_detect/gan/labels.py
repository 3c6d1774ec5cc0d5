"""Anomaly subtype and source image from a ``brain_abnormal`` file name: the one parser for both.

Files look like ``Patient00709_Plane3_1_of_3_png.rf.<hash>.jpg`` (normal) and
``<subtype>[-_]<case>_png.rf.<hash>.jpg`` (anomaly), with upstream typos. The class is the subtype
as spelled in the majority of files (``vein-of-galen``, ``holoprosencephaly``, ``m-magna``,
``intracranial-hemorrdge``); the rarer misspellings of the same subtype map onto it.
"""
from __future__ import annotations

import re

NORMAL = "normal"
# minority spelling -> the spelling most files use (both as written upstream)
SPELLING_FIXES = {
    "anold-chiari-maformation": "anold-chiari-malformation",
    "hydracenphay": "hydracenphaly",
    "intracnanial-hemorrdge": "intracranial-hemorrdge",
}
_RF = re.compile(r"(?:_(?:png|jpe?g|bmp))?\.rf\.[0-9a-f]+$", re.I)   # Roboflow copy suffix
_SUFFIX = re.compile(r"\.(?:png|jpe?g|bmp|txt)$", re.I)
_SUBTYPE = re.compile(r"^([a-z]+(?:-[a-z]+)*)")


def source_stem(name: str) -> str:
    """The source image a (Roboflow-augmented) file came from: ``x_png.rf.<hash>.jpg`` -> ``x``."""
    stem = _SUFFIX.sub("", name.rsplit("/", 1)[-1])
    stem = _RF.sub("", stem)
    return re.sub(r"_(?:png|jpe?g)$", "", stem, flags=re.I)


def source_id(name: str) -> str:
    """The grouping key for splits: ``PatientNNNNN`` for normal scans, else the source image stem."""
    stem = source_stem(name)
    m = re.match(r"(Patient\d+)", stem, re.I)
    return m.group(1) if m else stem.lower()


def subtype_of(name: str) -> str:
    """Class name of a file: ``normal`` for ``PatientNNNNN...``, else the canonical anomaly subtype."""
    stem = source_stem(name)
    if stem.lower().startswith("patient"):
        return NORMAL
    m = _SUBTYPE.match(stem.lower())
    if not m:
        raise ValueError(f"{name}: no anomaly subtype at the start of the file name")
    sub = m.group(1).rstrip("-")
    return SPELLING_FIXES.get(sub, sub)
