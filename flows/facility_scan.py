"""What the ``reprocess-facility`` flow finds under its data root, and what a sidecar may say.

Datasets are files matching the facility's patterns, plus *TIFF frame folders*: a folder
(below the data root) holding two or more TIFF files whose first file is a single 2-D frame
is one dataset, read by :func:`storage.readers.read_tiff` in name order. Symbolic links
that lead out of the data root are never followed; hidden files and folders are ignored.

A sidecar ``<dataset>.yaml`` beside a dataset may set science parameters only (ingest,
subsample, calibration, tiling, engine, evaluation -- within the bounds of
:mod:`flows.params`): no ``cluster`` section, no ``engine.options`` (unbounded expert
settings), and every file it names lies inside the data root.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path

from flows.params import ConfigError, load_yaml
from storage.atomic import file_digest, fingerprint
from storage.readers.sources import TIFF_SUFFIXES, source_files

#: Top-level sections a sidecar may set: the science of one dataset.
SIDECAR_SECTIONS = ("ingest", "subsample", "calibration", "tiling", "engine", "evaluation")
#: Sidecar fields holding file paths: resolved against the sidecar's folder, kept inside
#: the data root. ``learned_weights`` may also name a committed preset.
PATH_FIELDS = (("calibration", "pupil_file"), ("calibration", "surface_reference"),
               ("calibration", "learned_weights"), ("ingest", "options", "positions"))  # fmt: skip
WEIGHT_PRESETS = ("default", "layout")  # ptytasks.learned.inversion.PRESETS (no torch import)


@dataclass
class Scan:
    """The datasets under a data root, and the links that were refused."""

    datasets: list[Path] = field(default_factory=list)
    refused: list[tuple[Path, str]] = field(default_factory=list)  # (path, reason)


def inside(path: Path, real_root: Path) -> bool:
    """Whether ``path``, every link resolved, lies in ``real_root`` (itself resolved)."""
    try:
        path.resolve().relative_to(real_root)
    except (ValueError, OSError, RuntimeError):  # elsewhere, or a link loop
        return False
    return True


def _is_frame_folder(folder: Path, tiffs: list[str]) -> bool:
    """Two or more TIFFs, the first a single 2-D frame (not a multi-page stack)."""
    if len(tiffs) < 2:
        return False
    import tifffile

    try:
        with tifffile.TiffFile(folder / tiffs[0]) as tf:
            return len(tf.pages) == 1 and len(tf.series[0].shape) == 2
    except Exception:  # noqa: BLE001 - unreadable first frame: still frames; the reader says why
        return True


def scan(root: Path, patterns: list[str]) -> Scan:
    """Datasets under ``root`` (files and TIFF frame folders, sorted) and refused links.

    Raises
    ------
    ConfigError
        ``root`` is not a folder.
    """
    if not root.is_dir():
        raise ConfigError(f"data_root {root} is not a folder")
    real_root = root.resolve()
    out = Scan()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        for n in sorted(dirnames):
            # os.walk does not descend into linked folders; say so when they lead out
            if n.startswith(".") or (here / n).is_symlink():
                dirnames.remove(n)
                if not n.startswith(".") and not inside(here / n, real_root):
                    out.refused.append((here / n, "link to a folder outside data_root"))
        names = sorted(n for n in filenames if not n.startswith("."))
        matching = [n for n in names if any(fnmatch.fnmatch(n, p) for p in patterns)]
        outside = {n for n in matching if not inside(here / n, real_root)}
        tiffs = [n for n in matching if n.lower().endswith(TIFF_SUFFIXES)]
        if here != root and _is_frame_folder(here, [n for n in tiffs if n not in outside]):
            # one scan of single-frame files; a frame linked out makes the folder invalid
            out.datasets.append(here)
            matching = [n for n in matching if n not in tiffs]
        out.refused += [(here / n, "link to a file outside data_root")
                        for n in matching if n in outside]  # fmt: skip
        out.datasets += [here / n for n in matching if n not in outside and (here / n).is_file()]
    out.datasets.sort()
    return out


def source_state(path: Path, cached: dict | None = None, content: bool = True) -> dict:
    """``size`` (bytes), ``mtime_ns`` (newest), ``sig`` and ``content`` (SHA-256) of a dataset.

    The content hash is reused from ``cached`` when every file's name, size and mtime match
    (``sig``); ``content=False`` leaves it out (a file still being written is not read).
    Raises :class:`FileNotFoundError` when a file vanished meanwhile.
    """
    files = source_files(path)
    stats = [(f.relative_to(path.parent).as_posix(), f.stat()) for f in files]
    mtimes = [st.st_mtime_ns for _, st in stats]
    if path.is_dir():  # a frame added or removed changes the folder's mtime
        mtimes.append(path.stat().st_mtime_ns)
    sig = fingerprint([(n, st.st_size, st.st_mtime_ns) for n, st in stats])
    out = {"size": sum(st.st_size for _, st in stats), "mtime_ns": max(mtimes), "sig": sig}
    if not content:
        return out
    if cached and cached.get("sig") == sig and cached.get("content"):
        out["content"] = cached["content"]
    elif files == [path]:  # a lone file: its digest, as ledgers before frame folders kept it
        out["content"] = file_digest(path)
    else:
        digests = [file_digest(f) for f in files]
        out["content"] = fingerprint([(n, h) for (n, _), h in zip(stats, digests, strict=True)])
    return out


def sidecar_for(path: Path) -> Path:
    """``<dataset>.yaml`` beside the dataset file or frame folder."""
    return Path(f"{path}.yaml")


def read_sidecar(sidecar: Path, root: Path) -> dict:
    """A sidecar's parameters, restricted to science and to files inside ``root``.

    Path fields (:data:`PATH_FIELDS`) are resolved against the sidecar's folder and returned
    absolute.

    Raises
    ------
    ConfigError
        Naming the sidecar and the field: a ``cluster`` (or other non-science) section,
        ``engine.options``, a path outside the data root, or a sidecar that is itself a
        link out of it.
    """
    real_root = root.resolve()
    if not inside(sidecar, real_root):
        raise ConfigError(f"{sidecar}: a link out of data_root {root}: not read")
    doc = load_yaml(sidecar)
    for key in doc:
        if key not in SIDECAR_SECTIONS:
            why = ("where and how wide datasets run is the facility config's" if key == "cluster"
                   else f"a sidecar sets only {', '.join(SIDECAR_SECTIONS)}")  # fmt: skip
            raise ConfigError(f"{sidecar}: {key}: not allowed in a sidecar ({why})")
    if isinstance(doc.get("engine"), dict) and "options" in doc["engine"]:
        raise ConfigError(f"{sidecar}: engine.options: not allowed in a sidecar (unbounded "
                          "expert settings; set them in the facility config)")  # fmt: skip
    for fld in PATH_FIELDS:
        node = doc
        for k in fld[:-1]:
            node = node.get(k) if isinstance(node, dict) else None
        value = node.get(fld[-1]) if isinstance(node, dict) else None
        if not isinstance(value, str) or (fld[-1] == "learned_weights" and value in WEIGHT_PRESETS):
            continue  # absent, a preset, or a wrong type that validation reports
        target = sidecar.parent / Path(value).expanduser()
        if not inside(target, real_root):
            raise ConfigError(f"{sidecar}: {'.'.join(fld)}: {value} is outside data_root {root}")
        node[fld[-1]] = str(target.resolve())
    return doc
