"""Priors the engines start from: probe (or pupil) from the data, object from a quick
projection run, and the illumination weight a tile contributes to the stitched mosaic."""

from __future__ import annotations

import numpy as np
import torch

from ptytasks.data import PtychoData
from ptytasks.engines.result import ReconstructionResult
from ptytasks.physics.shifts import insert_patches


def mean_pattern_probe(data: PtychoData) -> np.ndarray:
    """Probe whose detector-plane amplitude is the root-mean frame, with flat phase.

    Its size and total power (counts per frame) are right for a weakly scattering
    object; the probe update has to find its phase.
    """
    from ptytasks.engines.pie import initial_probe, model_from_data

    model = model_from_data(data)
    return initial_probe(data, model, torch.device("cpu"), torch.complex64).numpy()


def probe_prior(data: PtychoData, source: str = "data") -> np.ndarray | None:
    """The probe prior of ``data`` (None for Fourier ptychography, which has a pupil).

    Parameters
    ----------
    source : {"data", "mean_pattern"}
        ``data``: the dataset's own probe when it has one, else the mean-pattern probe.
    """
    if data.modality == "fourier":
        return None
    if source == "data" and data.probe is not None:
        return np.asarray(data.probe, np.complex64)
    if data.modality == "coded":
        # Full-frame illumination: a plane wave carrying the mean counts per pixel.
        return np.full(data.frame_shape, np.sqrt(float(np.mean(data.frames))), np.complex64)
    if source in ("data", "mean_pattern"):
        return mean_pattern_probe(data).astype(np.complex64)
    raise ValueError(f"unknown probe prior {source!r}; use 'data' or 'mean_pattern'")


def object_prior(
    data: PtychoData, probe: np.ndarray | None, kind: str = "uniform", iterations: int = 10
) -> np.ndarray:
    """Object prior on ``data.object_shape``: ones (free space), or a short ePIE/rPIE run."""
    if kind == "uniform":
        return np.ones(data.object_shape, np.complex64)
    if kind in ("epie", "rpie"):
        from ptytasks.engines.registry import run_engine

        res = run_engine(kind, data, {"epochs": iterations}, probe_prior=probe)
        return np.asarray(res.object, np.complex64)
    raise ValueError(f"unknown object prior {kind!r}; use uniform, epie or rpie")


def tile_weight(data: PtychoData, result: ReconstructionResult) -> np.ndarray:
    """How strongly each object pixel of a tile was illuminated: ``sum_i |P(r - p_i)|^2``
    for scanning modalities, the number of frames seeing a pixel for coded ptychography,
    ones for Fourier ptychography. Stitching trusts a tile where this is large."""
    shape = tuple(result.object.shape[-2:])
    if data.modality == "fourier" or result.positions_px is None:
        return np.ones(shape, np.float32)
    if data.modality == "coded" or result.probe is None:
        w = torch.ones(data.frame_shape)
    else:
        p = torch.as_tensor(np.asarray(result.probe))
        w = (p.abs() ** 2).reshape(-1, *p.shape[-2:]).sum(0)
    pos = torch.as_tensor(result.positions_px, dtype=torch.float64)
    cov = insert_patches(w.expand(len(pos), *w.shape), pos, shape, subpixel=False)
    return cov.numpy().astype(np.float32)
