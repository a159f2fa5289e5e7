"""3PIE: the PIE update for a thick specimen of several slices (Maiden, Humphry and
Rodenburg 2012, JOSA A 29, 1606), with incoherent probe modes.

The forward pass keeps each slice's incident wave ``psi_s`` (``psi_1`` = the probe,
``psi_(s+1)`` = the wave leaving slice ``s`` propagated one slice spacing) and exit wave
``e_s = psi_s O_s``. After the modulus projection at the detector gives the change
``de_S`` of the last exit wave, the slices are updated from the last to the first: slice
``s`` gets the PIE object update with ``psi_s`` as its "probe", and its incident wave the
PIE probe update with ``O_s`` as its "object"; that incident-wave change, propagated back
one slice spacing, is the change ``de_(s-1)`` of the previous slice's exit wave. At the
first slice the incident wave is the probe: its change is the probe update. Steps are
those of :class:`~ptytasks.engines.pie.PIEState` (ePIE or rPIE, ``alpha`` for the
slices, ``beta`` for the incident waves and the probe).

Frames are taken one at a time (the sequential form of the paper), whatever the batch.
"""

from __future__ import annotations

import torch

from ptytasks.engines.pie_state import PIEState
from ptytasks.physics.fft import fft2u, ifft2u
from ptytasks.physics.propagators import angular_spectrum_tf


class MultislicePIEState(PIEState):
    """Slices ``(S, ny, nx)``, probe modes ``(M, wy, wx)``, positions; the 3PIE update.

    Parameters as :class:`~ptytasks.engines.pie.PIEState`; ``model`` must know its slice
    spacing (:meth:`~ptytasks.physics.models.base.ForwardModel.set_slices`), which stays
    fixed during the run (the propagators are built once).
    """

    def __init__(self, obj, probe, positions, model, amp, sqrt_f, **kw):
        if obj.dim() != 3:
            raise ValueError(f"multislice object must be (slices, ny, nx); got {tuple(obj.shape)}")
        super().__init__(obj, probe, positions, model, amp, sqrt_f, **kw)
        lam, px = model.slice_optics
        dz = float(model.slice_distance)
        self._h = angular_spectrum_tf(self.window, px, lam, dz, dtype=probe.dtype,
                                      device=probe.device)  # fmt: skip
        self._h_back = self._h.conj()  # -dz: the conjugate phase (evanescent stay zero)

    def _propagate(self, wave: torch.Tensor, back: bool = False) -> torch.Tensor:
        return ifft2u(fft2u(wave) * (self._h_back if back else self._h))

    def _object_step(self, num, intensity):
        pmax = intensity.max()
        if self.rpie:
            return num / ((1 - self.alpha) * intensity + self.alpha * pmax + self.eps)
        return num * (self.alpha / (pmax + self.eps))

    def _wave_step(self, num, intensity):
        omax = intensity.max()
        if self.rpie:
            return num / ((1 - self.beta) * intensity + self.beta * omax + self.eps)
        return num * (self.beta / (omax + self.eps))

    def step(self, idx: torch.Tensor, update_probe: bool, refiner=None) -> float:
        """3PIE updates from frames ``idx`` (one after another); the amplitude error sum.

        ``refiner`` is not used: a thick specimen's positions are corrected by the
        whole-pixel grid search alone (the sub-pixel least-squares step is a thin-object
        linearisation)."""
        err = 0.0
        wy, wx = self.window
        for j in idx.tolist():
            pos = self.pos[j]
            corner = torch.floor(pos).long() if self.subpixel else torch.round(pos).long()
            frac = pos - corner.to(pos.dtype)
            has_frac = self.subpixel and bool(frac.abs().max() > 1e-6)
            y0, x0 = int(corner[0]), int(corner[1])
            crops = self.obj[:, y0 : y0 + wy, x0 : x0 + wx]  # a view: updated in place
            shift = frac.expand(len(crops), 2)
            slices = self._shift(crops, -shift) if has_frac else crops.clone()
            incident = [self.probe]
            for s in range(len(slices) - 1):
                incident.append(self._propagate(incident[s] * slices[s]))
            exit_wave = incident[-1] * slices[-1]
            one = idx.new_tensor([j])
            wave = self.model.to_detector(exit_wave[None], one)[0]
            mod = torch.sqrt((wave.real**2 + wave.imag**2).sum(0))
            sf, amp = self.sqrt_f[j], self.amp[j]
            ratio = amp / sf / (mod + self.eps)
            if self.mask is None:
                err += float(((mod * sf - amp) ** 2).sum())
            else:
                err += float((((mod * sf - amp) ** 2) * self.mask).sum())
                ratio = torch.where(self.mask, ratio, torch.ones_like(ratio))
            d_exit = self.model.from_detector((wave * ratio)[None], one)[0] - exit_wave
            for s in range(len(slices) - 1, -1, -1):
                psi, o = incident[s], slices[s]
                d_obj = self._object_step((psi.conj() * d_exit).sum(0),
                                          (psi.real**2 + psi.imag**2).sum(0))  # fmt: skip
                d_psi = self._wave_step(o.conj()[None] * d_exit, o.real**2 + o.imag**2)
                crops[s] += self._shift(d_obj[None], frac[None])[0] if has_frac else d_obj
                if s > 0:  # the change of the previous slice's exit wave
                    d_exit = self._propagate(d_psi, back=True)
                elif update_probe:
                    self.probe += d_psi
                    if self.support is not None:
                        self.probe *= self.support
        return err
