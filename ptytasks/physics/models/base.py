"""The interface every forward model implements.

A forward model maps (object, probe, frame indices) to predicted intensities and owns the
modality's physical parameters as ``torch.nn.Parameter``s, so any subset can be learned:
positions or wavevectors, distances, wavelength, Zernike coefficients, per-frame intensity
factors. Engines use the split form ``exit_waves -> to_detector -> intensity`` (and
``from_detector`` for the PIE projections); gradient engines call ``forward``.
"""

from __future__ import annotations

import torch
from torch import nn


def illuminate(probe: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
    """Exit waves ``probe * patches`` with optional probe modes.

    Parameters
    ----------
    probe : complex ``(ny, nx)`` or ``(M, ny, nx)`` (incoherent modes)
    patches : complex ``(b, ny, nx)``

    Returns
    -------
    ``(b, ny, nx)`` for a single probe, ``(b, M, ny, nx)`` for modes.
    """
    if probe.dim() == 2:
        return patches * probe
    if probe.dim() == 3:
        return patches[:, None] * probe[None]
    raise ValueError(f"probe must be (ny, nx) or (modes, ny, nx); got {tuple(probe.shape)}")


def through_slices(probe: torch.Tensor, patches: torch.Tensor, step) -> torch.Tensor:
    """Exit waves of a multislice object (Maiden, Humphry and Rodenburg 2012, JOSA A 29,
    1606): ``psi_1 = P O_1``, ``psi_(s+1) = step(psi_s) O_(s+1)``.

    Parameters
    ----------
    probe : complex ``(ny, nx)`` or ``(M, ny, nx)`` (incoherent modes, each propagated)
    patches : complex ``(b, S, ny, nx)``
        The slices' patches, the beam's entrance slice first.
    step : callable
        Propagation over one slice spacing, ``wave -> wave`` (any leading dims).

    Returns
    -------
    ``(b, ny, nx)`` or ``(b, M, ny, nx)``: the wave leaving the last slice.
    """
    psi = illuminate(probe, patches[:, 0])
    for s in range(1, patches.shape[1]):
        o = patches[:, s] if psi.dim() == 3 else patches[:, s, None]
        psi = step(psi) * o
    return psi


def scalar_parameter(value, dtype: torch.dtype) -> nn.Parameter:
    """A frozen 0-d parameter (distance, wavelength): learnable via ``learnable(name)``."""
    return nn.Parameter(torch.as_tensor(float(value), dtype=dtype), requires_grad=False)


class ForwardModel(nn.Module):
    """Base class. Subclasses set ``modality`` and implement the three wave maps."""

    modality: str = ""

    def __init__(self, n_frames: int):
        super().__init__()
        # Per-frame intensity factors (source fluctuation), learnable on request.
        self.intensity_factors = nn.Parameter(torch.ones(n_frames), requires_grad=False)
        # Per-frame additive intensity floor (camera offset, stray light), off until an
        # engine enables it (enable_background): b = background_unit * background_raw.
        self.background_raw: nn.Parameter | None = None

    # --- parameters -------------------------------------------------------------------
    def learnable(self, *names: str) -> ForwardModel:
        """Mark physical parameters (by attribute name) as learnable; others frozen."""
        for name, p in self.named_parameters():
            p.requires_grad_(name in names)
        return self

    def physical_parameters(self) -> dict[str, torch.Tensor]:
        """Current values of all physical parameters (detached copies)."""
        return {n: p.detach().clone() for n, p in self.named_parameters()}

    # --- thick objects --------------------------------------------------------------------
    def set_slices(self, distance: float, *, wavelength: float, pixel_size: float):
        """Read a 3-D object ``(S, ny, nx)`` as ``S`` slices ``distance`` metres apart.

        Between slices the wave propagates by the angular spectrum at ``wavelength`` and
        ``pixel_size`` (object-plane metres); ``slice_distance`` becomes a (frozen)
        parameter like the others. A 2-D object stays a thin object.
        """
        if not distance > 0:
            raise ValueError(f"slice distance must be > 0 metres; got {distance}")
        self.slice_distance = scalar_parameter(distance, self.intensity_factors.dtype)
        self.slice_optics = (float(wavelength), float(pixel_size))
        return self

    def object_slices(self, obj: torch.Tensor, n_slices: int) -> torch.Tensor:
        """A start object of ``n_slices`` slices (engines' ``n_slices`` option).

        A 2-D (projection) start becomes ``n_slices`` equal slices, each its ``S``-th root,
        so their product is unchanged; a 3-D start of ``n_slices`` slices stays as given.

        Raises
        ------
        ValueError
            ``n_slices < 1``, slices without a spacing (:meth:`set_slices`), or a 3-D start
            of another number of slices.
        """
        n = int(n_slices)
        if n < 1:
            raise ValueError(f"n_slices must be >= 1; got {n_slices}")
        if n > 1 and getattr(self, "slice_distance", None) is None:
            raise ValueError(f"{n} slices need their spacing: params['slice_distance'] "
                             "(metres) in the data")  # fmt: skip
        if n > 1 and obj.dim() == 2:
            obj = (obj ** (1.0 / n))[None].repeat(n, 1, 1)
        if obj.dim() == 3 and obj.shape[0] != n:  # (a thin run cut a slice as its object)
            raise ValueError(f"the object start has {obj.shape[0]} slices but n_slices is {n}")
        return obj

    def propagate_slice(self, wave: torch.Tensor, back: bool = False) -> torch.Tensor:
        """``wave`` carried one slice spacing downstream (``back``: upstream)."""
        from ptytasks.physics.propagators import propagate

        lam, px = self.slice_optics
        return propagate(wave, px, lam, -self.slice_distance if back else self.slice_distance)

    def exit_from_patches(self, probe: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """Exit waves from object patches ``(b, ny, nx)`` (thin) or ``(b, S, ny, nx)``."""
        if patches.dim() == 3:
            return illuminate(probe, patches)
        if getattr(self, "slice_distance", None) is None:
            raise ValueError(f"a multislice object (patches {tuple(patches.shape)}) needs the "
                             "slice spacing: model.set_slices(distance, wavelength=, "
                             "pixel_size=) or params['slice_distance'] in the data")  # fmt: skip
        return through_slices(probe, patches, self.propagate_slice)

    # --- the model ----------------------------------------------------------------------
    def exit_waves(self, obj: torch.Tensor, probe: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Waves leaving the specimen for frames ``idx``: ``(b, [modes,] ny, nx)``."""
        raise NotImplementedError

    def to_detector(self, exit_wave: torch.Tensor, idx: torch.Tensor, **fields) -> torch.Tensor:
        """Propagate exit waves to the detector plane (complex, same leading shape).

        ``fields`` override stored modality fields for this call (``surface=`` for coded
        ptychography, ``pupil=`` for Fourier ptychography), so a neural field can supply them.
        """
        raise NotImplementedError

    def from_detector(self, wave: torch.Tensor, idx: torch.Tensor, **fields) -> torch.Tensor:
        """Adjoint/inverse of :meth:`to_detector` (for projection engines)."""
        raise NotImplementedError

    def enable_background(self, start: torch.Tensor, unit: torch.Tensor) -> ForwardModel:
        """Add a per-frame background ``b_j >= 0`` to the predicted intensities.

        ``start``, ``unit``: ``(n_frames,)``, in the model's intensity units: the starting
        values, and each frame's scale (e.g. its mean). Stored as ``background_raw =
        b / unit`` (frozen until named in :meth:`learnable`; engines keep it >= 0), so an
        optimiser's step of about ``lr`` moves each frame's floor by a fraction of its own
        level, a dim dark-field image's as much as the bright field's.
        """
        u = torch.as_tensor(unit).to(self.intensity_factors).clamp(min=1e-12)
        b = torch.as_tensor(start).to(self.intensity_factors).clamp(min=0)
        self.register_buffer("background_unit", u)
        self.background_raw = nn.Parameter(b / u, requires_grad=False)
        return self

    def background(self) -> torch.Tensor | None:
        """The per-frame background ``(n_frames,)`` (intensity units), or None if off."""
        raw = self.background_raw
        return None if raw is None else self.background_unit * raw

    def intensity(self, wave: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Detector intensity ``(b, ny, nx)`` from detector waves (modes summed), times the
        per-frame intensity factors, plus the per-frame background where enabled."""
        i = wave.real**2 + wave.imag**2
        if i.dim() == 4:  # incoherent sum over probe modes
            i = i.sum(1)
        i = i * self.intensity_factors[idx, None, None]
        if self.background_raw is not None:
            i = i + self.background()[idx, None, None]
        return i

    def forward(
        self, obj: torch.Tensor, probe: torch.Tensor, idx: torch.Tensor, **fields
    ) -> torch.Tensor:
        """Predicted intensities ``(b, ny, nx)`` for frames ``idx``."""
        wave = self.to_detector(self.exit_waves(obj, probe, idx), idx, **fields)
        return self.intensity(wave, idx)
