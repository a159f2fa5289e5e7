"""``ptyflow demo | ingest | run | export | show``: the pipeline from the command line.

Registered on the app in :mod:`flows.cli`. Heavy imports stay inside the commands so that
``--help`` is fast. Exit codes: 0 success, 1 the run failed, 2 bad input or configuration.
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import get_args

import typer

from flows.params import ClusterParams  # pydantic only: --help stays fast
from ptytasks.engines.registry import DEFAULT_ENGINE, ENGINES

# Choices follow the registry and the parameter models, so a new engine or cluster kind
# appears here too.
Engine = StrEnum("Engine", {v: v for v in ENGINES})
ClusterKind = StrEnum(
    "ClusterKind", {v: v for v in get_args(ClusterParams.model_fields["kind"].annotation)}
)


def _fail(msg: str, code: int = 2) -> None:
    typer.secho(f"error: {msg}", err=True, fg="red")
    raise typer.Exit(code)


def _one_line(exc: BaseException) -> str:
    """The message of a data or lock error on one line (file, field, what is wrong)."""
    return " ".join(str(exc).split())


def _grid(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        ny, nx = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(f"expected NYxNX such as 2x2; got {text!r}",
                                 param_hint="--grid") from None
    if ny < 1 or nx < 1:
        raise typer.BadParameter(f"tile counts must be >= 1; got {text!r}", param_hint="--grid")
    return ny, nx


def load_params(config: Path | None, overrides: dict):
    """YAML (optional) + ``PTYFLOW__`` env vars + command-line overrides, validated."""
    from flows.params import ConfigError, PipelineParams

    try:
        if config is not None:
            return PipelineParams.from_yaml(config, **overrides)
        return PipelineParams.from_mapping({}, source="command line", **overrides)
    except ConfigError as exc:
        _fail(str(exc))


def _print_metrics(metrics: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("metric", "value", title="metrics")
    for k, v in metrics.items():
        table.add_row(k, f"{v:.5g}" if isinstance(v, float) else str(v))
    Console().print(table)


def _run(params, *, verbose: bool, progress: bool = True) -> dict:
    from flows.params import ConfigError
    from flows.runner import run_pipeline, write_metrics_table
    from storage.errors import DataError
    from storage.lock import StoreLockedError

    try:
        result = run_pipeline(params, progress=progress, verbose=verbose)
    except (DataError, ConfigError, StoreLockedError) as exc:  # bad input or settings, or
        # the store is taken: 2 (a setting the data rule out, e.g. a tile grid finer than
        # the frames, is found only once they are read)
        _fail(_one_line(exc))
    except KeyboardInterrupt:
        typer.secho("interrupted: finished steps are kept; run the same command again to "
                    "resume", err=True, fg="yellow")  # fmt: skip
        raise typer.Exit(130) from None
    except Exception as exc:  # noqa: BLE001 - one line for the user, the log has the rest
        _fail(f"pipeline failed: {type(exc).__name__}: {exc}", code=1)
    store = Path(params.store)
    table = write_metrics_table(result["metrics"], store.parent / f"{store.stem}_metrics.csv")
    _print_metrics(result["metrics"])
    typer.echo(f"store: {store}\nmetrics: {table}")
    for p in ("amplitude", "phase"):
        png = store.parent / f"{store.stem}_{p}.png"
        if png.exists():
            typer.echo(f"preview: {png}")
    return result


def run(
    input: str | None = typer.Argument(
        None,
        help="Raw dataset (CXI, HDF5, NPZ[.bz2], NPY, TIFF, FPM .mat); or 'input' in --config.",
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="Run store (a .zarr folder)."),
    engine: Engine | None = typer.Option(None, help="Reconstruction engine."),
    keep: float | None = typer.Option(
        None, help="Keep this fraction of the frames (random, seeded): sparse-scan runs."
    ),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="YAML file of pipeline parameters (flags override it)."
    ),
    epochs: int | None = typer.Option(None, help="Epochs (RNF) or iterations (PIE)."),
    probe_modes: int | None = typer.Option(
        None, min=1, max=16, help="Incoherent probe modes (mixed state)."
    ),
    n_slices: int | None = typer.Option(
        None, min=1, max=64, help="Object slices (multislice, a thick specimen)."
    ),
    slice_thickness: float | None = typer.Option(
        None, help="Distance between slices, metres, > 0 (default: the file's)."
    ),
    grid: str | None = typer.Option(None, help="Tiles along y and x, e.g. 2x2."),
    cluster: ClusterKind | None = typer.Option(None, help="Where tiles run."),
    workers: int | None = typer.Option(None, help="Dask workers (cluster local)."),
    address: str | None = typer.Option(None, help="Scheduler address (cluster address)."),
    z1: float | None = typer.Option(None, help="Near-field cone beam: focus-to-sample, m."),
    half_data: bool | None = typer.Option(
        None, "--half-data/--no-half-data", help="Also reconstruct two halves (FRC)."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show Prefect's logs."),
) -> None:
    """Run the pipeline on one dataset, with a progress bar; re-running resumes.

    Parameters come from --config (YAML, the pipeline's own schema), then PTYFLOW__A__B
    environment variables, then these flags. Without PREFECT_API_URL a temporary Prefect
    server runs for the whole command (shared by every Dask worker).
    """
    if keep is not None and not 0 < keep <= 1:
        raise typer.BadParameter(f"must be in (0, 1]; got {keep}", param_hint="--keep")
    ov: dict = {}
    if input is not None:
        ov["input"] = input
    if out is not None:
        ov["store"] = str(out)
    sections = {
        "engine": {"engine": engine.value if engine else None, "epochs": epochs,
                   "probe_modes": probe_modes, "n_slices": n_slices,
                   "slice_thickness": slice_thickness},
        "subsample": {"method": "fraction", "fraction": keep} if keep is not None else {},
        "tiling": {"grid": _grid(grid)},
        "cluster": {
            "kind": cluster.value if cluster else None,
            "n_workers": workers,
            "address": address,
        },  # fmt: skip
        "ingest": {"z1": z1},
        "evaluation": {"half_data": half_data},
    }
    for sec, vals in sections.items():
        vals = {k: v for k, v in vals.items() if v is not None}
        if vals:
            ov[sec] = vals
    params = load_params(config, ov)
    if not Path(params.input).exists():
        _fail(f"input {params.input} does not exist")
    _run(params, verbose=verbose)


def demo(
    out: Path = typer.Option(Path("demo-out"), "--out", "-o", help="Output folder."),
    engine: Engine = typer.Option(DEFAULT_ENGINE, help="Engine (default: the pipeline's, RNF)."),
    epochs: int | None = typer.Option(None, help="Epochs or iterations (default: the "
                                      "pipeline's, 50)."),
    cluster: ClusterKind = typer.Option("local", help="Where tiles run."),
    workers: int = typer.Option(2, help="Dask workers (cluster local)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show Prefect's logs."),
) -> None:
    """Simulate a small far-field dataset and run the whole pipeline on it (2x2 tiles).

    Writes OUT/demo.cxi, the run store OUT/demo.zarr, OUT/demo_metrics.csv and the
    previews OUT/demo_amplitude.png and OUT/demo_phase.png. About 1.5 minutes on 2 CPU
    cores with the default engine, RNF.
    """
    import time

    from flows.runner import demo_dataset

    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    cxi = out / "demo.cxi"
    if not cxi.exists():
        demo_dataset(cxi)
        typer.echo(f"simulated {cxi}")
    from ptytasks.engines.registry import get as engine_spec

    # the demo's probe is the simulator's own: an engine that learns a residual on its
    # priors (RNF) refines it; the others keep it
    learn_probe = engine_spec(engine.value).residual_on_priors
    params = load_params(None, {
        "input": str(cxi), "store": str(out / "demo.zarr"), "tiling": {"grid": (2, 2)},
        "engine": {"engine": engine.value, "learn_probe": learn_probe,
                   **({} if epochs is None else {"epochs": epochs})},
        "cluster": {"kind": cluster.value, "n_workers": workers, "torch_threads": 1},
    })  # fmt: skip
    _run(params, verbose=verbose)
    typer.echo(f"demo finished in {time.perf_counter() - t0:.0f} s")


def ingest(
    input: Path = typer.Argument(..., help="Raw dataset file (or TIFF folder)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run store (created if needed)."),
    z1: float | None = typer.Option(None, help="Near-field cone beam: focus-to-sample, m."),
    option: list[str] = typer.Option(
        [], "--option", help="Reader option KEY=VALUE (repeatable), e.g. step_size=1e-8."
    ),
) -> None:
    """Read a raw dataset into the run store's raw/ step (validated, streamed).

    Skipped when the store already holds the same source with the same options.
    """
    import yaml

    from flows.params import IngestParams
    from flows.stages import ingest as do_ingest
    from storage.errors import DataError
    from storage.lock import StoreLock, StoreLockedError

    if not input.exists():
        _fail(f"input {input} does not exist")
    opts = {}
    for o in option:
        k, sep, v = o.partition("=")
        if not sep or not k:
            raise typer.BadParameter(f"expected KEY=VALUE; got {o!r}", param_hint="--option")
        try:
            opts[k] = yaml.safe_load(v)
        except yaml.YAMLError as exc:
            raise typer.BadParameter(f"{o!r}: the value is not YAML ({exc.problem})",
                                     param_hint="--option") from None
    try:
        with StoreLock(out):
            ref = do_ingest(str(input), str(out), IngestParams(z1=z1, options=opts))
    except (DataError, ValueError, TypeError, StoreLockedError) as exc:
        _fail(_one_line(exc))
    typer.echo(f"ingested {ref['n_frames']} {ref['modality']} frames into {out}")


def export(
    store: Path = typer.Argument(..., help="Run store of a finished run."),
    out: Path = typer.Argument(..., help="Output .npz file."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Write the final object, probe and corrected positions as plain NumPy arrays (.npz).

    positions are the refined scan positions of the kept frames in the mosaic's pixels
    (top-left window corners, (y, x)); frames gives their indices in the raw data.
    """
    from flows.export import export_npz
    from storage.errors import DataError
    from storage.lock import StoreLockedError

    if out.suffix != ".npz":
        raise typer.BadParameter(f"must end in .npz; got {out.name!r}", param_hint="OUT")
    if out.exists() and not force:
        raise typer.BadParameter(f"{out} exists; pass --force to overwrite", param_hint="OUT")
    if not out.parent.is_dir():
        raise typer.BadParameter(f"folder {out.parent} does not exist", param_hint="OUT")
    try:
        shapes = export_npz(store, out)
    except (DataError, KeyError, StoreLockedError) as exc:
        _fail(str(exc))
    typer.echo(f"wrote {out}: " + ", ".join(f"{k} {tuple(v)}" for k, v in shapes.items()))


def show(
    store: Path = typer.Argument(..., help="Run store."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Summarise a run store: data, steps, tiles (engine, seconds, loss), metrics."""
    from flows.export import summarize
    from storage.errors import DataError

    try:
        s = summarize(store)
    except DataError as exc:
        _fail(str(exc))
    if as_json:
        json.dump(s, sys.stdout, indent=1, default=str)
        sys.stdout.write("\n")
        return
    from rich.console import Console
    from rich.table import Table

    con = Console()
    con.print(f"[bold]{s['store']}[/] (layout {s['layout']})")
    if "data" in s:
        d = s["data"]
        nom = lambda k: " (nominal: not in the file)" if k in d.get("nominal", []) else ""  # noqa: E731
        con.print(f"data: {d['modality']}, {d['frames']} frames {d['frame_shape']}, "
                  f"kept {s.get('kept_frames', '-')}, wavelength {d['wavelength_m']:.4g} m"
                  f"{nom('wavelength')}, pixel {d['pixel_size_m']:.4g} m"
                  f"{nom('pixel_size')}")  # fmt: skip
    con.print("steps: " + (", ".join(s["steps"]) or "none"))
    if s["tiles"]:
        t = Table("tile", "frames", "done", "engine", "seconds", "final loss", title="tiles")
        for r in s["tiles"]:
            t.add_row(
                r["tile"],
                str(r["frames"]),
                "yes" if r["done"] else "no",
                str(r.get("engine", "")),
                str(r.get("seconds", "")),
                f"{r['final_loss']:.4g}" if r.get("final_loss") is not None else "",
            )
        con.print(t)
    if "mosaic" in s:
        con.print(f"mosaic: {s['mosaic'][0]} x {s['mosaic'][1]} px")
    if s.get("metrics"):
        _print_metrics(s["metrics"])
    for p in s.get("previews", []):
        con.print(f"preview: {p}")
