"""Building the forward model of a dataset: the one place that maps ``PtychoData``
geometry onto a model class (engines, simulators and calibration all call it)."""

from __future__ import annotations

import numpy as np
import torch

from ptytasks.data import PtychoData
from ptytasks.physics.models.base import ForwardModel


def _require(data: PtychoData, ok: bool, what: str) -> None:
    if not ok:
        src = data.meta.get("source", "the dataset")
        raise ValueError(f"{src}: {data.modality} data needs {what}")


def model_for(
    data: PtychoData, *, truth: bool = False, dtype: torch.dtype = torch.float32
) -> ForwardModel:
    """The forward model of ``data``'s modality, with nominal or TRUE parameters.

    Parameters
    ----------
    data : PtychoData
        A simulated (``truth=True`` needs ``ground_truth``) or measured dataset.
    truth : bool
        Use the ground-truth positions/wavevectors, wavelength, distance, coded surface and
        Zernike coefficients instead of the nominal ones (the coded surface is
        ``meta["surface"]`` when nominal, if present).
    dtype : torch.dtype
        Real dtype of the model parameters.

    Returns
    -------
    ForwardModel
        ``model(ground_truth["object"], ground_truth["probe"], idx)`` reproduces the
        noise-free frames when ``truth`` is true.
    """
    from ptytasks.physics.models.fourier import FourierPtychography

    gt = data.ground_truth or {}
    if truth and not gt:
        raise ValueError("model_for(truth=True) needs a dataset with ground_truth")
    pick = lambda key, nominal: np.asarray(gt[key]) if truth and key in gt else nominal
    lam = float(pick("wavelength", data.wavelength))
    dist = pick("distance", data.distance)
    dist = None if dist is None else float(dist)
    fshape = data.frame_shape
    m = data.modality
    if m == "fourier":
        _require(data, data.wavevectors is not None, "wavevectors (ky, kx) in cycles/m")
        _require(data, "na" in data.params, "params['na'] (objective NA)")
        z = np.asarray(gt["zernike"]) if truth and "zernike" in gt else np.zeros(15)
        model = FourierPtychography(
            pick("wavevectors", data.wavevectors),
            data.object_shape,
            fshape,
            wavelength=lam,
            na=data.params["na"],
            pixel_size=data.pixel_size,
            distance=dist or 0.0,
            zernike_indices=len(z),
            dtype=dtype,
        )
        model.zernike.data = torch.as_tensor(z, dtype=dtype)
        return model
    pos = pick("positions_px", data.positions_px)
    _require(data, pos is not None, "positions_px (scan positions)")
    if m in ("nearfield", "coded"):
        _require(data, dist is not None, "distance (metres)")
    if m == "coded":
        _require(data, "surface_distance" in data.params, "params['surface_distance'] (metres)")
    model = _scanning(data, m, pos, lam, dist, gt, truth, dtype)
    if "slice_distance" in data.params:  # a thick specimen: slices this far apart
        model.set_slices(float(data.params["slice_distance"]), wavelength=lam,
                         pixel_size=float(pick("pixel_size", data.pixel_size)))  # fmt: skip
    return model


def _scanning(data, m, pos, lam, dist, gt, truth, dtype) -> ForwardModel:
    """The scanning modalities' models (far field, near field, coded)."""
    from ptytasks.physics.models.coded import Coded
    from ptytasks.physics.models.farfield import FarField
    from ptytasks.physics.models.nearfield import NearField

    fshape = data.frame_shape
    if m == "farfield":
        return FarField(pos, data.object_shape, fshape, dtype=dtype)
    if m == "nearfield":
        return NearField(
            pos,
            data.object_shape,
            fshape,
            wavelength=lam,
            distance=dist,
            pixel_size=data.pixel_size,
            dtype=dtype,
        )
    if m == "coded":
        surface = gt.get("surface") if truth else data.meta.get("surface")
        return Coded(
            pos,
            data.object_shape,
            fshape,
            wavelength=lam,
            distance=dist,
            surface_distance=data.params["surface_distance"],
            pixel_size=data.pixel_size,
            surface=None if surface is None else torch.as_tensor(np.asarray(surface)),
            dtype=dtype,
        )
    raise ValueError(f"unknown modality {m!r}")
