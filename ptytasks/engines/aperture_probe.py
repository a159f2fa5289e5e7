"""A far-field probe prior with four learned numbers: its aperture on the detector plane.

Where the frames are photon-starved (a few counts per pixel: the data-term rule's Poisson
branch, :mod:`ptytasks.engines.data_term`), RNF's probe residual cannot be pinned pixel by
pixel: it ends no better than its blind start. Yet the start's pupil *edge* is most of its
error, and the object's error follows it (a support cut at 10 % of the smoothed mean
pattern is ~1.2 px too wide on a 25.6 px zone-plate pupil; a pupil 0.2 px off costs RNF
20-70 %). Four numbers are pinned by every frame's bright-field edge: the probe's prior
becomes the aperture

    ``Q(k) = A clamp(R - |k - c| + 1/2, 0, 1) exp(i pi b (1 + s) |k - c|^2)``

(radius ``R`` and centre ``c`` in detector pixels, the start's Fresnel coefficient ``b``
scaled by ``1 + s``, an edge one pixel wide), started at the blind start's own support
(area radius, centroid) and defocus, learned by the run's optimiser from the first epoch;
the probe is its object-plane wave plus the residual field as before. Hypothesis 64 in
``docs/rnf.md``: chosen on tuning cases (the aperture alone, without the residual, lost).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["DISK_MISFIT_MAX", "ApertureProbe", "aperture_prior", "detector_wave", "object_wave"]

#: ``probe_aperture: auto`` takes a start whose detector-plane modulus the uniform disk
#: explains to this relative misfit: blind starts of the simulator's zone plates and
#: electron aperture measure 0.21-0.27 (their count noise and blurred edge), a square
#: pupil 0.41, a zone plate with a 40 % central stop 0.61, a Gaussian beam's 0.46 -- those
#: keep their start (read off these shapes, no error scored; ``records/rnf-aperture-*``).
DISK_MISFIT_MAX = 0.35


def detector_wave(probe: torch.Tensor) -> torch.Tensor:
    """Detector-plane wave of an object-plane probe centred at ``(N//2, N//2)``, centred
    at ``N//2`` too (the inverse of :func:`object_wave`)."""
    ny, nx = probe.shape[-2:]
    p = torch.roll(probe, (-(ny // 2), -(nx // 2)), (-2, -1))
    return torch.fft.fftshift(torch.fft.fft2(p, norm="ortho"), dim=(-2, -1))


def object_wave(wave: torch.Tensor) -> torch.Tensor:
    """Object-plane probe, centred at ``(N//2, N//2)``, of a detector-plane wave centred at
    ``N//2`` (as :func:`ptytasks.probe_estimate.farfield_probe` builds it)."""
    ny, nx = wave.shape[-2:]
    p = torch.fft.ifft2(torch.fft.ifftshift(wave, dim=(-2, -1)), norm="ortho")
    return torch.roll(p, (ny // 2, nx // 2), (-2, -1))


class ApertureProbe(nn.Module):
    """The aperture prior of a far-field probe, fitted to a start probe.

    Parameters
    ----------
    start : complex tensor ``(N, N)``
        Object-plane probe, centred at ``(N//2, N//2)`` (the blind far-field start or a
        user's prior): its detector-plane support gives the radius (the area radius) and
        the centre (the centroid), its power the amplitude ``A``, and its phase, by least
        squares over neighbouring pixels of the support, the Fresnel coefficient ``b``.

    Attributes
    ----------
    params : Parameter ``[R, c_y, c_x, s]`` (detector pixels; ``s`` dimensionless)
    """

    def __init__(self, start: torch.Tensor):
        super().__init__()
        q0 = detector_wave(start.detach().to(torch.complex128))
        a = q0.abs()
        support = a > 1e-3 * a.max()
        ny, nx = q0.shape
        yy, xx = torch.meshgrid(torch.arange(ny, dtype=torch.float64, device=a.device),
                                torch.arange(nx, dtype=torch.float64, device=a.device),
                                indexing="ij")  # fmt: skip
        cy, cx = float(yy[support].mean()), float(xx[support].mean())
        radius = math.sqrt(float(support.sum()) / math.pi)
        # neighbouring phase differences of exp(i pi b rho^2): 2 pi b (x + 1/2 - c_x)
        dx = torch.angle(q0[:, 1:] * q0[:, :-1].conj())
        dy = torch.angle(q0[1:, :] * q0[:-1, :].conj())
        mx, my = support[:, 1:] & support[:, :-1], support[1:, :] & support[:-1, :]
        gx, gy = (xx[:, :-1] + 0.5 - cx)[mx], (yy[:-1, :] + 0.5 - cy)[my]
        b = float((dx[mx] * gx).sum() + (dy[my] * gy).sum()) / max(
            2 * math.pi * float((gx**2).sum() + (gy**2).sum()), 1e-30)
        self.start = {"radius_px": radius, "centre_px": [cy, cx], "fresnel_b": b}
        self.amplitude, self.fresnel_b = float((a[support] ** 2).mean().sqrt()), b
        self.register_buffer("yy", yy.to(torch.float32))
        self.register_buffer("xx", xx.to(torch.float32))
        self.params = nn.Parameter(torch.tensor([radius, cy, cx, 0.0], dtype=torch.float32,
                                                device=a.device))  # fmt: skip
        self.dtype = start.dtype
        with torch.no_grad():  # the start's power, whatever the edge model changes
            w = self._wave()
            self.norm = float(start.abs().pow(2).sum().sqrt().double()
                              / w.abs().pow(2).sum().sqrt().clamp(min=1e-30))  # fmt: skip
            fitted = detector_wave(w).abs() * self.norm
            #: relative misfit of the start's detector modulus by the uniform disk
            self.misfit = float((a - fitted).norm() / a.norm().clamp(min=1e-30))

    def _wave(self) -> torch.Tensor:
        r, cy, cx, s = self.params.to(torch.float64).unbind()
        rho2 = (self.yy.double() - cy) ** 2 + (self.xx.double() - cx) ** 2
        edge = (r - (rho2 + 1e-12).sqrt() + 0.5).clamp(0.0, 1.0)  # 1e-12: finite gradient
        phase = math.pi * self.fresnel_b * (1 + s) * rho2
        return object_wave(self.amplitude * edge * torch.polar(torch.ones_like(phase), phase))

    def forward(self) -> torch.Tensor:
        """The object-plane probe prior, in the start's dtype."""
        return (self._wave() * getattr(self, "norm", 1.0)).to(self.dtype)

    def report(self) -> dict:
        """Start and learned values (``result.extras["probe_aperture"]``)."""
        r, cy, cx, s = (float(v) for v in self.params.detach().cpu())
        return {"radius_px": r, "centre_px": [cy, cx], "defocus_scale": 1 + s,
                "start": dict(self.start), "start_misfit": self.misfit}


def aperture_prior(option, data, data_term: dict | None, probe: torch.Tensor,
                   device) -> ApertureProbe | None:
    """RNF's learned aperture for ``probe`` (its start), or None (``probe_aperture``).

    ``"auto"``: where the data-term rule found the frames photon-starved and the data carry
    no probe of their own (the prior is an estimate, e.g. the blind start, not a measured
    probe), for a single-mode probe whose start the uniform disk explains
    (:data:`DISK_MISFIT_MAX`). ``True`` asks for far-field scanning data.
    """
    from ptytasks.modalities import modality_of

    mod = modality_of(data)
    if option is False:
        return None
    if probe.dim() != 2:
        if option is True:
            raise ValueError("probe_aperture needs a single-mode probe; this one has "
                             f"{probe.shape[0]} modes")
        return None
    if not (mod.far_field_detector and mod.localized_probe):
        if option is True:
            raise ValueError(f"probe_aperture needs far-field scanning data, not {mod.name}")
        return None
    if option == "auto" and (data.probe is not None
                             or not (data_term and data_term.get("starved"))):
        return None
    aperture = ApertureProbe(probe).to(device)
    return None if option == "auto" and aperture.misfit > DISK_MISFIT_MAX else aperture
