"""The ``reprocess-facility`` flow: keep a folder of raw datasets reconstructed.

Every (scheduled) run scans ``data_root`` (:mod:`flows.facility_scan`: files and TIFF frame
folders, no links out of the root) and runs the pipeline for each dataset that is new,
whose content fingerprint changed, or that an older pipeline version (or other parameters)
processed; a few at a time. The ledger ``<output_root>/ptyflow-facility.json``
(:mod:`flows.facility_ledger`) remembers, per dataset, the fingerprint, parameters,
version, outcome and attempts, written as each dataset starts and finishes. A dataset that
failed is reported and not retried until it changes (or ``retry_failed``); one whose
process died (killed, out of memory) is retried alone, after the others, at most
``max_attempts`` times. So one corrupt file neither stops the others nor fails every run.

Per-dataset settings (e.g. ``ingest: {z1: 3.65e-3}`` for cone-beam near-field data) go in
a sidecar ``<dataset>.yaml`` beside it; they override ``config`` for it, science only.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NONE
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, ConfigDict, Field

from flows.facility_ledger import LEDGER, Ledger, is_live
from flows.facility_scan import (
    inside,
    read_sidecar,
    scan,
    sidecar_for,
    source_files,
    source_state,
)
from flows.params import ConfigError, PipelineParams, load_yaml
from storage import layout as L
from storage.atomic import fingerprint

__all__ = ["LEDGER", "Decision", "FacilityParams", "Ledger", "decide", "load_yaml",
           "reprocess_facility", "run_dataset", "store_for"]  # fmt: skip

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
    max_concurrent: int = Field(2, ge=1, le=64, description="Datasets reconstructed at once.")
    min_age_seconds: float = Field(
        60.0, ge=0, description="Skip files modified more recently (still being written)."
    )
    pipeline_version: str | None = Field(
        None, description="Version recorded with results (default: installed ptyflow)."
    )
    retry_failed: bool = Field(False, description="Retry datasets that failed, even unchanged.")
    max_attempts: int = Field(
        3, ge=1, le=100,
        description="Attempts at an unchanged dataset whose process died (killed, out of "
        "memory) before it is left as failed until its content or parameters change.",
    )  # fmt: skip


@dataclass
class Decision:
    """What one scan decided for one dataset."""

    name: str  # path relative to data_root: the ledger key
    path: str
    store: str
    action: str  # process | skip | failed-before | wait | invalid | vanished | refused | running
    # (after the run: processed | failed | busy)
    reason: str
    fingerprint: str = ""
    params: dict | None = None
    source: dict | None = None  # size, newest mtime_ns, stat signature and content hash
    params_fp: str = ""  # params_fingerprint of ``params``
    died: int = 0  # attempts whose process died: such datasets run alone, after the others


# ----------------------------------------------------------------------------- plain functions
def params_fingerprint(params: PipelineParams) -> str:
    """A dataset's run settings (its paths aside) and the content of the files they name
    (network weights, :func:`named_inputs`): a file rewritten in place counts as changed
    parameters."""
    from flows.step_keys import network_weights

    own = {k: v for k, v in params.model_dump(mode="json").items() if k not in ("input", "store")}
    weights = network_weights(params.engine, params.calibration)
    files = named_inputs(params)
    return fingerprint(own, *([weights] if weights else []), *([files] if files else []))


def named_inputs(params: PipelineParams) -> dict[str, str]:
    """Digests of the files the parameters name beside the dataset (a positions file, a
    measured pupil, a surface reference): corrected in place under the same path, they
    change the parameters' fingerprint, as the pipeline's own step keys do."""
    from flows.step_keys import input_digest

    named = {"ingest.options.positions": params.ingest.options.get("positions"),
             "calibration.pupil_file": params.calibration.pupil_file,
             "calibration.surface_reference": params.calibration.surface_reference}
    return {k: input_digest(v) for k, v in named.items() if isinstance(v, str) and v}


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


def store_for(settings: FacilityParams, rel: Path) -> Path:
    """``<output_root>/<folders>/<name>.zarr``: one per source file (``scan.1.h5`` ->
    ``scan.1.h5.zarr``). Stores named before this rule (dots as ``_``, which sent
    ``scan.1.h5`` and ``scan_1.h5`` to one store) keep their names: :func:`decide` reads
    a dataset's store from the ledger when it has one."""
    return Path(settings.output_root) / rel.parent / (rel.name + ".zarr")


def dataset_params(settings: FacilityParams, path: Path, store: Path) -> PipelineParams:
    """Pipeline parameters for one dataset: ``config``, then its sidecar YAML, validated.

    Raises
    ------
    ConfigError
        Naming the sidecar (or the dataset) and the field.
    """
    raw = load_yaml(settings.config) if settings.config else {}
    sidecar = sidecar_for(path)
    has_sidecar = sidecar.is_file() or sidecar.is_symlink()
    if has_sidecar:
        raw = _merge(raw, read_sidecar(sidecar, Path(settings.data_root)))
    return PipelineParams.from_mapping(raw, source=str(sidecar if has_sidecar else path),
                                       overrides_source="the facility scan",
                                       input=str(path), store=str(store))  # fmt: skip


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _store_finished(store: Path) -> bool:
    from storage.store import RunStore

    try:
        return RunStore(store, "r").is_complete(L.METRICS)
    except Exception:  # noqa: BLE001 - a missing or unreadable store is "not finished"
        return False


def decide(settings: FacilityParams, ledger: dict, now: float | None = None) -> list[Decision]:
    """Scan ``data_root`` and decide, per dataset, whether to (re)process it.

    One dataset's trouble (vanished, unreadable, a bad sidecar) is its own decision, never
    an error of the scan. Raises :class:`ConfigError` only for the operator's settings (a
    broken shared ``config``, a missing ``data_root``).
    """
    root = Path(settings.data_root)
    now = time.time() if now is None else now
    version = pipeline_version(settings)
    if settings.config:  # a broken shared config is the operator's error, not each dataset's
        PipelineParams.from_mapping(load_yaml(settings.config), source=settings.config,
                                    input="-", store="-")  # fmt: skip
    found = scan(root, settings.patterns)
    out = [Decision(p.relative_to(root).as_posix(), str(p), "", "refused", f"{why}: not followed")
           for p, why in found.refused]  # fmt: skip
    for path in found.datasets:
        rel = path.relative_to(root)
        entry = ledger.get(rel.as_posix(), {})
        store = entry.get("store") or str(store_for(settings, rel))
        d = Decision(rel.as_posix(), str(path), store, "skip", "unchanged")
        try:
            _decide_one(settings, d, entry, now, version)
        except FileNotFoundError:  # deleted or renamed between listing and reading
            d.action, d.reason = "vanished", "disappeared during the scan"
        except Exception as exc:  # noqa: BLE001 - unreadable file etc.: this dataset's failure
            d.action, d.reason = "invalid", f"{type(exc).__name__}: {exc}"
        if d.action == "invalid" and (entry.get("fingerprint"), entry.get("error")) == (
            d.fingerprint, d.reason[:2000]):  # fmt: skip
            d.action, d.reason = "failed-before", f"failed before, unchanged: {d.reason}"
        out.append(d)
    _refuse_shared_stores(out)
    return out


def _refuse_shared_stores(decisions: list[Decision]) -> None:
    """Two datasets never write one store (stores named by the old rule could collide):
    every dataset of such a pair is refused this scan, naming the other."""
    by_store: dict[str, list[Decision]] = {}
    for d in decisions:
        if d.store:
            by_store.setdefault(str(Path(d.store).resolve()), []).append(d)
    for group in (g for g in by_store.values() if len(g) > 1):
        for d in group:
            others = ", ".join(o.name for o in group if o is not d)
            d.action = "refused"
            d.reason = f"its run store {d.store} is also the store of {others}: rename one"


def _decide_one(settings: FacilityParams, d: Decision, entry: dict, now: float, version: str):
    path = Path(d.path)
    recent = source_state(path, content=False)["mtime_ns"] / 1e9 > now - settings.min_age_seconds
    if recent:  # not hashed: it may still be being written
        d.action, d.reason = "wait", "modified recently (may still be written)"
        return
    real_root = Path(settings.data_root).resolve()
    for f in source_files(path):  # frames or positions the reader would follow out of the root
        if not inside(f, real_root):
            raise ConfigError(f"{f}: a link out of data_root {settings.data_root}: not read")
    state = d.source = source_state(path, entry)  # the hash is reused while files are unchanged
    sidecar = sidecar_for(path)
    own = sidecar.is_file() and inside(sidecar, real_root)
    d.fingerprint = fingerprint(state["content"], sidecar.read_text() if own else "")
    try:
        params = dataset_params(settings, path, Path(d.store))
    except ConfigError as exc:
        d.action, d.reason = "invalid", str(exc)
        return
    d.params = params.model_dump(mode="json")
    d.params_fp = params_fingerprint(params)
    status, attempts = entry.get("status"), entry.get("attempts", 1)
    if status == "running" and is_live(entry):
        d.action = "running"
        d.reason = f"being processed by pid {entry.get('pid')} since {entry.get('started')}"
    elif not entry:
        d.action, d.reason = "process", "new"
    elif entry.get("fingerprint") != d.fingerprint:
        d.action, d.reason = "process", "content changed"
    elif _older(entry.get("version", "0"), version):
        d.action, d.reason = "process", f"pipeline {entry.get('version')} < {version}"
    elif entry.get("params") != d.params_fp:
        d.action, d.reason = "process", "parameters changed"
    elif status == "busy":
        d.action, d.reason = "process", f"its store was busy last time: {entry.get('error', '')}"
    elif status == "failed":
        d.action = "process" if settings.retry_failed else "failed-before"
        d.reason = f"failed before, unchanged: {entry.get('error', '')}"
    elif status in ("died", "running"):  # "running" of a gone process: not reaped yet
        d.died = attempts
        if attempts < settings.max_attempts or settings.retry_failed:
            d.action = "process"
            d.reason = f"attempt {attempts + 1} of {settings.max_attempts}, alone: process died"
        else:
            d.action = "failed-before"
            d.reason = f"process died in {attempts} attempts, unchanged: {entry.get('error', '')}"
    elif not _store_finished(Path(d.store)):
        d.action, d.reason = "process", "run store missing or incomplete"


def run_dataset(d: Decision, ledger: Ledger, version: str, run=None) -> dict:
    """Run the pipeline for ``d``, recorded in ``ledger`` as it starts and as it ends.

    ``run(params)`` defaults to the ``pipeline`` flow. A store locked by another run (or an
    export) is recorded as ``busy`` and retried at the next scan; any other exception is
    recorded as ``failed`` and re-raised; a process killed meanwhile leaves ``running``,
    which the next scan records as ``died`` (:meth:`Ledger.reap`).
    """
    if run is None:
        from flows.pipeline import pipeline as run
    from storage.lock import StoreLockedError

    ledger.start(d, version)
    try:
        result = run(PipelineParams.model_validate(d.params))
    except StoreLockedError as exc:  # another run or an export: not this dataset's failure
        ledger.record(d, "busy", version, str(exc))
        return {"name": d.name, "busy": str(exc)}
    except Exception as exc:
        ledger.record(d, "failed", version, f"{type(exc).__name__}: {exc}")
        raise
    ledger.record(d, "ok", version)
    return {"name": d.name, "metrics": (result or {}).get("metrics", {})}


def batches(todo: list[Decision], max_concurrent: int) -> list[tuple[list[Decision], int]]:
    """``[(datasets, threads), ...]`` in order: the others at ``max_concurrent``, then each
    dataset whose process died before, alone (fewest deaths first), so a dataset that
    kills its process takes no other dataset with it."""
    first = [d for d in todo if not d.died]
    suspects = sorted((d for d in todo if d.died), key=lambda d: (d.died, d.name))
    return ([(first, max_concurrent)] if first else []) + [([d], 1) for d in suspects]


# ----------------------------------------------------------------------------- Prefect
class DatasetFailures(RuntimeError):
    """Datasets that failed in this run (the others finished; see the report)."""


# Inputs include the ledger (a lock, a file): not hashable, and never to be cached.
@task(name="process-dataset", task_run_name="process-{name}", cache_policy=NONE)
def process_dataset(name: str, decision: dict, ledger: Ledger, version: str) -> dict:
    """Run the pipeline flow for one dataset (a subflow of this task), recorded as it goes."""
    return run_dataset(Decision(**decision), ledger, version)


@flow(name="reprocess-datasets")
def reprocess_datasets(todo: list[dict], output_root: str, version: str) -> list[dict]:
    """Submit every dataset (``Decision`` as dict); the task runner's threads limit how many
    run at once. Each is in the ledger the moment it starts and the moment it ends.

    Returns one ``{"name", "ok", "error"}`` per dataset; failures do not stop the others.
    """
    ledger = Ledger(output_root)
    futures = [process_dataset.submit(d["name"], d, ledger, version) for d in todo]
    out = []
    for d, fut in zip(todo, futures, strict=True):
        try:
            res = fut.result()
            out.append({"name": d["name"], "ok": True, "error": "", "busy": res.get("busy", "")})
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
    for p in ledger.set_aside:
        log.warning("unreadable ledger set aside as %s; rebuilt from this scan", p)
    for name in ledger.reap():
        log.error("%s: the process of its last attempt died (killed or out of memory)", name)
    version = pipeline_version(settings)
    decisions = decide(settings, ledger.entries)
    for d in decisions:
        if d.action == "invalid":  # a broken sidecar is as bad as a broken file
            ledger.record(d, "failed", version, d.reason)
    todo = [d for d in decisions if d.action == "process"]
    log.info("%d datasets, %d to process", len(decisions), len(todo))
    results = []
    for group, threads in batches(todo, settings.max_concurrent):
        runner = ThreadPoolTaskRunner(max_workers=threads)
        results += reprocess_datasets.with_options(task_runner=runner)(
            [asdict(d) for d in group], settings.output_root, version)  # fmt: skip
    by_name = {d.name: d for d in todo}
    for r in results:
        d = by_name[r["name"]]
        d.action, d.reason = (("busy", r["busy"]) if r.get("busy") else ("processed", d.reason)) \
            if r["ok"] else ("failed", r["error"])
    report: dict[str, list[str]] = {}
    for d in decisions:
        report.setdefault(d.action, []).append(d.name)
        bad = d.action in ("failed", "invalid", "failed-before", "refused")
        (log.error if bad else log.info)("%s: %s (%s)", d.name, d.action, d.reason)
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
