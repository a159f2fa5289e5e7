"""Building the forward model of a dataset: the one entry every engine, simulator and
calibration step calls (each modality builds its own model class, :mod:`.base`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ptytasks.modalities.base import Geometry, modality_of

if TYPE_CHECKING:  # torch is imported when a model is built, not when a reader validates
    import torch

    from ptytasks.data import PtychoData
    from ptytasks.physics.models.base import ForwardModel


def _missing(data: PtychoData, g: Geometry, field: str) -> bool:
    if field.startswith("params."):
        return field.split(".", 1)[1] not in data.params
    return getattr(g, field, getattr(data, field, None)) is None


def model_for(
    data: PtychoData, *, truth: bool = False, dtype: torch.dtype | None = None
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
    dtype : torch.dtype, optional
        Real dtype of the model parameters (default float32).

    Returns
    -------
    ForwardModel
        ``model(ground_truth["object"], ground_truth["probe"], idx)`` reproduces the
        noise-free frames when ``truth`` is true. A dataset with ``params["slice_distance"]``
        (metres) gets a multislice model (:meth:`ForwardModel.set_slices`).

    Raises
    ------
    ValueError
        Naming the dataset and the field its modality needs but it lacks.
    """
    gt = data.ground_truth or {}
    if truth and not gt:
        raise ValueError("model_for(truth=True) needs a dataset with ground_truth")
    pick = lambda key, nominal: np.asarray(gt[key]) if truth and key in gt else nominal
    dist = pick("distance", data.distance)
    g = Geometry(
        wavelength=float(pick("wavelength", data.wavelength)),
        distance=None if dist is None else float(dist),
        positions_px=pick("positions_px", data.positions_px),
        wavevectors=pick("wavevectors", data.wavevectors),
        pixel_size=float(pick("pixel_size", data.pixel_size)),
        truth=gt if truth else None,
    )
    mod = modality_of(data)
    for field, what in mod.requires:
        if _missing(data, g, field):
            src = data.meta.get("source", "the dataset")
            raise ValueError(f"{src}: {data.modality} data needs {what}")
    import torch

    model = mod.build_model(data, g, torch.float32 if dtype is None else dtype)
    if mod.scanning and "slice_distance" in data.params:  # a thick specimen: S slices
        model.set_slices(float(data.params["slice_distance"]), wavelength=g.wavelength,
                         pixel_size=g.pixel_size)  # fmt: skip
    return model
