"""The ``ptyflow`` command line (typer). One function per command.

Imports of torch, h5py and the flows happen inside the commands, so ``ptyflow --help`` and
shell completion stay fast.
"""

from __future__ import annotations

import math
from enum import StrEnum
from pathlib import Path

import typer

from ptytasks.modalities import get as get_modality
from ptytasks.modalities import names as modality_names

app = typer.Typer(
    name="ptyflow",
    help="Ptychography reconstruction: simulate, ingest, reconstruct, evaluate, serve.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def main() -> None:
    """ptyflow: distributed ptychography reconstruction."""
    # A callback keeps `ptyflow <command>` a command group even with a single command.


# The registered modalities (ptytasks.modalities imports no torch: --help stays fast).
Modality = StrEnum("Modality", {n: n for n in modality_names()})


class Scan(StrEnum):
    raster = "raster"
    jittered = "jittered"
    fermat = "fermat"
    random = "random"


class DoseUnit(StrEnum):
    frame = "frame"
    pixel = "pixel"


# The simulator keyword behind each option, and its flag (for "does not apply" errors:
# which modality takes a keyword is read from its simulator, Modality.simulate_keywords).
_FLAGS = {
    "seed": "--seed", "dose": "--dose", "dose_unit": "--dose-unit", "overlap": "--overlap",
    "n_positions": "--n-positions", "scan": "--scan", "frame_size": "--frame-size",
    "object_kind": "--object", "probe": "--probe", "probe_diameter_px": "--probe-diameter",
    "amplitude_range": "--amplitude", "known_probe": "--known-probe",
    "mode_fractions": "--mode-fractions", "position_error_px": "--position-error",
    "position_scale_error": "--position-scale-error", "distance_error": "--distance-error",
    "defocus_error": "--defocus-error", "wavelength_error": "--wavelength-error",
    "na_illum": "--na-illum", "upsample": "--upsample",
}  # fmt: skip


_PROBES = ("zone_plate", "gaussian", "electron")
# The smallest frame every simulator turns into finite frames: 0 divides by zero, and the
# near field's 1-2 px (the coded 1 px) frames come out NaN.
_MIN_FRAME = 3


def _check_fraction(name: str, v: float | None, lo: float, hi: float) -> None:
    if v is not None and not (math.isfinite(v) and lo <= v < hi):
        raise typer.BadParameter(f"must be in [{lo}, {hi}); got {v}", param_hint=name)


def _writable(out: Path, flag: str = "--out") -> None:
    """Refuse an output whose folder is missing or not writable before any work (a
    training run found it only at the end)."""
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise typer.BadParameter(f"folder {parent} does not exist", param_hint=flag)
    import tempfile

    try:  # a real write: permission bits do not tell (root, read-only mounts)
        with tempfile.NamedTemporaryFile(dir=parent, prefix=f".{out.name}.probe-"):
            pass
    except OSError as exc:
        raise typer.BadParameter(f"folder {parent} is not writable ({exc.strerror or exc})",
                                 param_hint=flag) from None


def _fractions(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        f = tuple(float(v) for v in text.split(","))
    except ValueError:
        f = ()
    if not f or any(not (math.isfinite(v) and v > 0) for v in f) or abs(sum(f) - 1) > 1e-6:
        raise typer.BadParameter(f"must be positive numbers summing to 1, e.g. 0.6,0.3,0.1; "
                                 f"got {text!r}", param_hint="--mode-fractions")  # fmt: skip
    return f


@app.command()
def simulate(
    modality: Modality = typer.Option(..., "--modality", "-m", help="Imaging modality."),
    out: Path = typer.Option(..., "--out", "-o", help="Output CXI file (.cxi or .h5)."),
    seed: int = typer.Option(0, help="Random seed (object, scan, errors, noise)."),
    dose: float | None = typer.Option(
        None, help="Photons per frame (or per pixel, --dose-unit); omit for noise-free data."
    ),
    dose_unit: DoseUnit = typer.Option(DoseUnit.frame, help="Unit of --dose."),
    overlap: float | None = typer.Option(
        None, help="Linear overlap 1 - step/diameter (Fourier: spectral overlap) in [0, 1)."
    ),
    n_positions: int | None = typer.Option(None, help="Number of scan positions (target)."),
    scan: Scan | None = typer.Option(None, help="Scan pattern (scanning modalities)."),
    frame_size: int | None = typer.Option(
        None, min=_MIN_FRAME, help="Frame (detector/sensor) side, pixels."
    ),
    object_kind: str | None = typer.Option(
        None, "--object", help="Test object, e.g. camera, usaf, siemens, dead_leaves."
    ),
    probe: str | None = typer.Option(None, help="Far-field probe: zone_plate, gaussian, electron."),
    probe_diameter: float | None = typer.Option(
        None, min=1.0, help="Far-field probe footprint, object pixels (default 0.35 x frame)."
    ),
    amplitude: tuple[float, float] | None = typer.Option(
        None, help="Object amplitude at image value 0 and 1 (default: the modality's, e.g. "
        "far field 0.8 1; '1 0.8' with --object layout: one material, thicker is darker)."
    ),
    known_probe: bool = typer.Option(
        False, "--known-probe", help="Store the true probe as the data's probe (far/near field)."
    ),
    mode_fractions: str | None = typer.Option(
        None, help="Partially coherent probe (far/near field): power fractions of its "
        "incoherent modes, comma-separated, summing to 1, e.g. 0.6,0.3,0.1."
    ),
    position_error: float = typer.Option(
        0.0, help="RMS random position error, pixels (Fourier: spectrum pixels)."
    ),
    position_scale_error: float = typer.Option(0.0, help="Relative scan-scale error."),
    distance_error: float | None = typer.Option(None, help="Relative distance error."),
    defocus_error: float | None = typer.Option(None, help="Fourier: defocus error, metres."),
    wavelength_error: float = typer.Option(0.0, help="Relative wavelength error."),
    na_illum: float | None = typer.Option(None, help="Fourier: largest illumination NA."),
    upsample: int | None = typer.Option(None, min=1, help="Fourier: high-resolution factor."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output file."),
) -> None:
    """Simulate a dataset and write it as CXI, ground truth under entry_1/ground_truth/."""
    m = modality.value
    if out.suffix.lower() not in (".cxi", ".h5", ".hdf5"):
        raise typer.BadParameter(f"must end in .cxi (or .h5); got {out.name!r}", param_hint="--out")
    if out.exists() and not force:
        raise typer.BadParameter(f"{out} exists; pass --force to overwrite", param_hint="--out")
    if not out.parent.is_dir():
        raise typer.BadParameter(f"folder {out.parent} does not exist", param_hint="--out")
    _check_fraction("--overlap", overlap, 0.0, 1.0)
    if dose is not None and not (math.isfinite(dose) and dose > 0):
        raise typer.BadParameter(
            f"must be a positive number of photons; got {dose}", param_hint="--dose"
        )
    if position_error < 0:
        raise typer.BadParameter("is an RMS length and must be >= 0", param_hint="--position-error")
    if n_positions is not None and n_positions < 1:
        raise typer.BadParameter("must be >= 1", param_hint="--n-positions")
    for flag, v in (("--position-scale-error", position_scale_error),
                    ("--distance-error", distance_error),
                    ("--wavelength-error", wavelength_error)):  # fmt: skip
        if v is not None and not (math.isfinite(v) and v > -1):
            raise typer.BadParameter(f"must be > -1 (a relative error: the value used is "
                                     f"(1 + error) x nominal); got {v}",
                                     param_hint=flag)  # fmt: skip

    given = {
        "seed": seed, "dose": dose, "dose_unit": dose_unit.value, "overlap": overlap,
        "n_positions": n_positions, "scan": scan.value if scan else None,
        "frame_size": frame_size,  # Fourier: the low-resolution image side
        "object_kind": object_kind, "probe": probe, "probe_diameter_px": probe_diameter,
        "amplitude_range": None if amplitude is None else tuple(amplitude),
        "known_probe": known_probe or None, "mode_fractions": _fractions(mode_fractions),
        "position_error_px": position_error or None,
        "position_scale_error": position_scale_error or None,
        "distance_error": distance_error, "defocus_error": defocus_error,
        "wavelength_error": wavelength_error or None, "na_illum": na_illum, "upsample": upsample,
    }  # fmt: skip
    kw = {key: value for key, value in given.items() if value is not None}
    takes = get_modality(m).simulate_keywords()
    for key in kw.keys() - takes:
        ok = [n for n in modality_names() if key in get_modality(n).simulate_keywords()]
        raise typer.BadParameter(
            f"does not apply to {m}; it is for {', '.join(sorted(ok))}", param_hint=_FLAGS[key]
        )

    from ptytasks.simulate.objects import KINDS

    if object_kind is not None and object_kind not in KINDS:
        raise typer.BadParameter(f"choose one of {', '.join(KINDS)}", param_hint="--object")
    if probe is not None and probe not in _PROBES:
        raise typer.BadParameter(f"choose one of {', '.join(_PROBES)}", param_hint="--probe")

    from ptytasks.simulate import simulate as run_simulation
    from storage.cxi import write_cxi

    _writable(out)

    try:
        data = run_simulation(m, **kw)
    except ValueError as exc:  # bad combinations found by the simulator (ranges, sampling)
        raise typer.BadParameter(str(exc)) from exc
    write_cxi(out, data)
    ny, nx = data.frame_shape
    typer.echo(
        f"wrote {out}: {m}, {data.n_frames} frames {ny}x{nx}, object {data.object_shape[0]}x"
        f"{data.object_shape[1]} at {data.pixel_size:.4g} m/px, wavelength "
        f"{data.wavelength:.4g} m, dose {'noise-free' if dose is None else f'{dose:g}'}"
    )


class LearnedModel(StrEnum):
    ppn = "ppn"
    ptychonn = "ptychonn"


class LearnedLoss(StrEnum):
    mse = "mse"
    mse_nssim = "mse_nssim"


@app.command("train-learned")
def train_learned(
    model: LearnedModel = typer.Option(LearnedModel.ppn, help="Network: PPN or PtychoNN CNN."),
    out: Path = typer.Option(..., "--out", "-o", help="Weights file (.pt); JSON record beside."),
    steps: int = typer.Option(3000, min=1, help="Optimiser steps (batches)."),
    batch: int = typer.Option(32, min=1, help="Samples per step."),
    epoch_steps: int = typer.Option(100, min=1, help="Steps per validation/plateau epoch."),
    lr: float = typer.Option(1e-3, help="Initial Adam learning rate."),
    loss: LearnedLoss = typer.Option(
        LearnedLoss.mse_nssim, help="mse, or alpha*MSE + (1-alpha)*NSSIM."
    ),
    alpha: float = typer.Option(0.9, help="MSE weight of mse_nssim."),
    frame_size: int = typer.Option(32, min=16, help="Diffraction frame side, pixels."),
    probe_diameter: float = typer.Option(
        0.0, min=0.0, help="Zone-plate footprint, object pixels (0: 0.35 x frame size)."
    ),
    out_size: int = typer.Option(
        0, min=0, help="Predicted patch side, pixels (0: N/2 if it holds the footprint, else N)."
    ),
    dim: int = typer.Option(0, min=0, help="Network width (0: PPN 48, PtychoNN 32)."),
    objects: str | None = typer.Option(
        None, help="Object kinds of the training canvases (comma list; repeats weight a "
        "kind; see `ptyflow simulate --help`). Default: the default weights' dead leaves and "
        "blobs."
    ),
    single_material: bool = typer.Option(
        False, help="One image sets amplitude and phase (thicker is darker; absolute phase)."
    ),
    n_val: int = typer.Option(64, min=1, help="Held-out validation samples."),
    seed: int = typer.Option(0, help="Seed of the weights and the data stream."),
    threads: int = typer.Option(1, min=1, help="torch CPU threads."),
) -> None:
    """Train a single-shot inversion network (PPN or PtychoNN) on simulated far-field data."""
    import shlex
    import sys

    from ptytasks.learned.train_inversion import TrainConfig, run

    if out.suffix != ".pt":
        raise typer.BadParameter(f"must end in .pt; got {out.name!r}", param_hint="--out")
    _writable(out)
    _check_fraction("--alpha", alpha, 0.0, 1.0 + 1e-12)
    if not (math.isfinite(lr) and lr > 0):
        raise typer.BadParameter(f"must be > 0; got {lr}", param_hint="--lr")
    from ptytasks.learned.single_shot_data import TRAIN_KINDS
    from ptytasks.simulate.objects import KINDS

    kinds = TRAIN_KINDS if objects is None else tuple(
        k.strip() for k in objects.split(",") if k.strip())
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise typer.BadParameter(f"unknown kind(s) {', '.join(bad) or '(none)'}; choose from "
                                 f"{', '.join(KINDS)}", param_hint="--objects")  # fmt: skip
    try:
        cfg = TrainConfig(model=model.value, steps=steps, batch=batch, epoch_steps=epoch_steps,
                          lr=lr, loss=loss.value, alpha=alpha, frame_size=frame_size,
                          probe_diameter_px=probe_diameter or None, out_size=out_size or None,
                          dim=dim, n_val=n_val, kinds=kinds, single_material=single_material,
                          seed=seed, threads=threads)  # fmt: skip
        from ptytasks.learned.inversion import build
        from ptytasks.learned.train_inversion import inversion_config

        build(inversion_config(cfg))  # sizes the network cannot take fail here, not later
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    command = shlex.join(["ptyflow", *sys.argv[1:]])
    rec = run(cfg, out, command=command, log=typer.echo)
    v = rec["validation"]
    typer.echo(
        f"wrote {out} ({rec['parameters']} parameters, {rec['train_seconds']:.0f} s); held-out "
        f"amplitude PSNR {v['amp_psnr']:.2f} dB SSIM {v['amp_ssim']:.3f}, phase PSNR "
        f"{v['phase_psnr']:.2f} dB SSIM {v['phase_ssim']:.3f}"
    )


@app.command(
    "train-denoiser",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def train_denoiser(ctx: typer.Context) -> None:
    """Train PINE's nonexpansive DnCNN denoiser on formula-driven synthetic images.

    Every option goes to ``python -m ptytasks.learned.train_denoiser`` (``--out``, ``--seed``,
    ``--paper`` for the paper's size on a GPU, ``--steps``, ...; ``-- --help`` lists them). The
    committed default weights were made by the command in
    ``ptytasks/learned/weights/dncnn_default.json``.
    """
    from ptytasks.learned.train_denoiser import main

    main(list(ctx.args))


# The pipeline and server commands live in their own modules (lightweight imports only).
from flows import cli_pipeline, cli_server  # noqa: E402

app.command("demo")(cli_pipeline.demo)
app.command("ingest")(cli_pipeline.ingest)
app.command("run")(cli_pipeline.run)
app.command("export")(cli_pipeline.export)
app.command("show")(cli_pipeline.show)
app.add_typer(cli_server.server_app, name="server")


if __name__ == "__main__":  # pragma: no cover
    app()
