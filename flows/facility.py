"""The ``reprocess-facility`` flow: keep a folder of raw datasets reconstructed.

Every (scheduled) run scans ``data_root`` and runs the pipeline for each dataset that is
new, whose content fingerprint changed, or that an older pipeline version (or other
parameters) processed; a few at a time. The ledger ``<output_root>/ptyflow-facility.json``
remembers, per dataset, the fingerprint, parameters, version and outcome. A dataset that
failed is reported and not retried until it changes (or ``retry_failed``), so one corrupt
file neither stops the others nor fails every later run.

Per-dataset settings (e.g. ``ingest: {z1: 3.65e-3}`` for cone-beam near-field data) go in
a sidecar ``<dataset file>.yaml`` beside the file; they override ``config`` for it.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, ConfigDict, Field

from flows.params import ConfigError, PipelineParams
from flows.pipeline import pipeline
from storage.atomic import file_digest, fingerprint

LEDGER = "ptyflow-facility.json"
PATTERNS = ["*.cxi", "*.h5", "*.hdf5", "*.nxs", "*.npz", "*.npz.bz2", "*.npy", "*.mat",
            "*.tif", "*.tiff"]  # fmt: skip


class FacilityParams(BaseModel):
    """Where the raw data lives, where results go, and how much runs at once."""

    model_config = ConfigDict(extra="forbid")

    data_root: str = Field(..., description="Folder scanned (recursively) for raw datasets.")
    output_root: str = Field(..., description="Run stores, previews and the ledger go here.")
    config: str | None = Field(
        None, description="YAML of pipeline parameters for every dataset (input/store omitted)."
    )
    patterns: list[str] = Field(
        default_factory=lambda: list(PATTERNS), description="File-name globs of datasets."
    )
    max_concurrent: int = Field(2, ge=1, description="Datasets reconstructed at once.")
    min_age_seconds: float = Field(
        60.0, ge=0, description="Skip files modified more recently (still being written)."
    )
    pipeline_version: str | None = Field(
        None, description="Version recorded with results (default: installed ptyflow)."
    )
    retry_failed: bool = Field(False, description="Retry datasets that failed, even unchanged.")


@dataclass
class Decision:
    """What one scan decided for one dataset."""

    name: str  # path relative to data_root: the ledger key
    path: str
    store: str
    action: str  # "process" | "skip" | "failed-before" | "wait" | "invalid"
    reason: str
    fingerprint: str = ""
    params: dict | None = None
    source: dict | None = None  # size, mtime_ns and content hash of the file when scanned


# ----------------------------------------------------------------------------- plain functions
def params_fingerprint(params: PipelineParams) -> str:
    """A dataset's run settings (its paths aside) and the content of the network weights
    they read: weights retrained in place count as changed parameters."""
    from flows.stages import network_weights

    own = {k: v for k, v in params.model_dump(mode="json").items() if k not in ("input", "store")}
    weights = network_weights(params.engine, params.calibration)
    return fingerprint(own, weights) if weights else fingerprint(own)


def pipeline_version(settings: FacilityParams) -> str:
    """The configured version, else the installed ptyflow's."""
    if settings.pipeline_version:
        return settings.pipeline_version
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ptyflow")
    except PackageNotFoundError:  # running from a plain checkout
        return "0"


def _older(a: str, b: str) -> bool:
    """``a < b`` as versions (PEP 440 where both parse, else as strings)."""
    from packaging.version import InvalidVersion, Version

    try:
        return Version(a) < Version(b)
    except InvalidVersion:
        return a < b


def find_datasets(root: Path, patterns: list[str]) -> list[Path]:
    """Files under ``root`` matching any of ``patterns`` (sorted; hidden files ignored)."""
    if not root.is_dir():
        raise ConfigError(f"data_root {root} is not a folder")
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and not any(s.startswith(".") for s in rel.parts):
            if any(fnmatch.fnmatch(p.name, pat) for pat in patterns):
                out.append(p)
    return out


def content_hash(path: Path, cached: dict | None = None) -> str:
    """SHA-256 of the file's bytes; reused from ``cached`` when size and mtime match."""
    st = path.stat()
    if cached and cached.get("size") == st.st_size and cached.get("mtime_ns") == st.st_mtime_ns:
        return cached["content"]
    return file_digest(path)


def store_for(settings: FacilityParams, rel: Path) -> Path:
    """``<output_root>/<folders>/<name with dots as _>.zarr``: unique per source file."""
    return Path(settings.output_root) / rel.parent / (rel.name.replace(".", "_") + ".zarr")


def load_yaml(path: str | Path) -> dict:
    """A YAML mapping; a missing, unreadable or non-mapping file is a :class:`ConfigError`."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: configuration file not found")
    try:
        doc = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{p}: top level must be a mapping of parameters")
    return doc


def dataset_params(settings: FacilityParams, path: Path, store: Path) -> PipelineParams:
    """Pipeline parameters for one dataset: ``config``, then its sidecar YAML, validated."""
    raw = load_yaml(settings.config) if settings.config else {}
    sidecar = Path(f"{path}.yaml")
    if sidecar.is_file():
        raw = _merge(raw, load_yaml(sidecar))
    return PipelineParams.from_mapping(raw, source=str(sidecar if sidecar.is_file() else path),
                                       input=str(path), store=str(store))  # fmt: skip


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _store_finished(store: Path) -> bool:
    from storage.store import RunStore

    try:
        return RunStore(store, "r").is_complete("metrics")
    except Exception:  # noqa: BLE001 - a missing or unreadable store is "not finished"
        return False


def decide(settings: FacilityParams, ledger: dict, now: float | None = None) -> list[Decision]:
    """Scan ``data_root`` and decide, per dataset, whether to (re)process it."""
    root = Path(settings.data_root)
    now = time.time() if now is None else now
    version = pipeline_version(settings)
    if settings.config:  # a broken shared config is the operator's error, not each dataset's
        PipelineParams.from_mapping(load_yaml(settings.config), source=settings.config,
                                    input="-", store="-")  # fmt: skip
    out = []
    for path in find_datasets(root, settings.patterns):
        rel = path.relative_to(root)
        name, store = rel.as_posix(), store_for(settings, rel)
        entry = ledger.get(name, {})
        d = Decision(name, str(path), str(store), "skip", "unchanged")
        if now - path.stat().st_mtime < settings.min_age_seconds:
            d.action, d.reason = "wait", "modified recently (may still be written)"
            out.append(d)
            continue
        st = path.stat()
        content = content_hash(path, entry)
        d.source = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "content": content}
        sidecar = Path(f"{path}.yaml")
        d.fingerprint = fingerprint(content, sidecar.read_text() if sidecar.is_file() else "")
        try:
            params = dataset_params(settings, path, store)
        except ConfigError as exc:
            d.action, d.reason = "invalid", str(exc)
            if entry.get("fingerprint") == d.fingerprint and entry.get("error") == str(exc)[:2000]:
                d.action, d.reason = "failed-before", f"failed before, unchanged: {exc}"
            out.append(d)
            continue
        d.params = params.model_dump(mode="json")
        pfp = params_fingerprint(params)
        if not entry:
            d.action, d.reason = "process", "new"
        elif entry.get("fingerprint") != d.fingerprint:
            d.action, d.reason = "process", "content changed"
        elif _older(entry.get("version", "0"), version):
            d.action, d.reason = "process", f"pipeline {entry.get('version')} < {version}"
        elif entry.get("params") != pfp:
            d.action, d.reason = "process", "parameters changed"
        elif entry.get("status") == "failed":
            d.action = "process" if settings.retry_failed else "failed-before"
            d.reason = f"failed before, unchanged: {entry.get('error', '')}"
        elif not _store_finished(store):
            d.action, d.reason = "process", "run store missing or incomplete"
        out.append(d)
    return out


class Ledger:
    """The facility's JSON ledger; thread-safe updates, atomic rewrites."""

    def __init__(self, output_root: str | Path):
        self.path = Path(output_root) / LEDGER
        self._lock = threading.Lock()
        self.entries: dict = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def record(self, d: Decision, status: str, version: str, error: str = "") -> None:
        pfp = params_fingerprint(PipelineParams.model_validate(d.params)) if d.params else ""
        entry = {"fingerprint": d.fingerprint, "params": pfp,
                 "version": version, "status": status, "error": error[:2000],
                 "store": d.store, "finished": dt.datetime.now(dt.UTC).isoformat(),
                 **(d.source or {})}  # fmt: skip
        with self._lock:
            self.entries[d.name] = entry
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self.entries, indent=1, sort_keys=True))
            os.replace(tmp, self.path)  # readers never see a half-written ledger


# ----------------------------------------------------------------------------- Prefect
class DatasetFailures(RuntimeError):
    """Datasets that failed in this run (the others finished; see the report)."""


@task(name="process-dataset", task_run_name="process-{name}")
def process_dataset(name: str, params: dict) -> dict:
    """Run the pipeline flow for one dataset (as a subflow of this task)."""
    result = pipeline(PipelineParams.model_validate(params))
    return {"name": name, "metrics": result.get("metrics", {})}


@flow(name="reprocess-datasets")
def reprocess_datasets(todo: list[dict]) -> list[dict]:
    """Submit every dataset; the task runner's thread count is the concurrency limit.

    Returns one ``{"name", "ok", "error"}`` per dataset; failures do not stop the others.
    """
    futures = [process_dataset.submit(d["name"], d["params"]) for d in todo]
    out = []
    for d, fut in zip(todo, futures, strict=True):
        try:
            fut.result()
            out.append({"name": d["name"], "ok": True, "error": ""})
        except Exception as exc:  # noqa: BLE001 - reported per dataset
            out.append({"name": d["name"], "ok": False, "error": f"{type(exc).__name__}: {exc}"})
    return out


@flow(name="reprocess-facility")
def reprocess_facility(settings: FacilityParams) -> dict:
    """Reprocess every new or changed dataset under ``settings.data_root``.

    Returns ``{action: [dataset, ...]}``; a table artifact ``facility-report`` lists every
    dataset with its action and reason. Raises :class:`DatasetFailures` at the end when a
    dataset failed in this run (all others have been processed by then).
    """
    log = get_run_logger()
    ledger = Ledger(settings.output_root)
    version = pipeline_version(settings)
    decisions = decide(settings, ledger.entries)
    todo = [d for d in decisions if d.action == "process"]
    log.info("%d datasets, %d to process", len(decisions), len(todo))
    runner = ThreadPoolTaskRunner(max_workers=settings.max_concurrent)
    results = reprocess_datasets.with_options(task_runner=runner)(
        [{"name": d.name, "params": d.params} for d in todo]
    ) if todo else []  # fmt: skip
    by_name = {d.name: d for d in todo}
    for r in results:
        d = by_name[r["name"]]
        ledger.record(d, "ok" if r["ok"] else "failed", version, r["error"])
        d.action, d.reason = ("processed", d.reason) if r["ok"] else ("failed", r["error"])
    for d in decisions:
        if d.action == "invalid":  # a broken sidecar is as bad as a broken file
            ledger.record(d, "failed", version, d.reason)
    report: dict[str, list[str]] = {}
    for d in decisions:
        report.setdefault(d.action, []).append(d.name)
        level = log.error if d.action in ("failed", "invalid", "failed-before") else log.info
        level("%s: %s (%s)", d.name, d.action, d.reason)
    rows = [{k: v for k, v in asdict(d).items() if k in ("name", "action", "reason", "store")}
            for d in decisions]  # fmt: skip
    create_table_artifact(key="facility-report", table=rows or [{"name": "(no datasets)"}],
                          description=f"Facility scan of {settings.data_root}")  # fmt: skip
    new_failures = report.get("failed", []) + report.get("invalid", [])
    if new_failures:
        raise DatasetFailures(
            f"{len(new_failures)} dataset(s) failed: {', '.join(new_failures)}"
            f"; processed: {', '.join(report.get('processed', [])) or '-'}"
        )
    return report
