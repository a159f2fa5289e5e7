"""Fourier ptychography: the specimen under an LED array, low-resolution images through
an objective pupil, one per illumination angle (wavevector)."""

from __future__ import annotations

import numpy as np

from ptytasks.modalities.base import Modality, register


class FourierModality(Modality):
    name = "fourier"
    scanning = False
    localized_probe = False
    has_pupil = True
    camera_background = True  # a microscope camera's images
    band_only_object = True  # RNF's object: the synthetic aperture's band (hypothesis 70)
    rnf_wavelet_weight = 0.0  # no Haar term on a band-limited object (hypothesis 68)
    tile_margin = 8  # detector pixels
    requires = (("wavevectors", "wavevectors (ky, kx) in cycles/m"),
                ("params.na", "params['na'] (objective NA)"))  # fmt: skip
    simulator = "ptytasks.simulate.coded_fourier:simulate_fourier"

    def build_model(self, data, g, dtype):
        import torch

        from ptytasks.physics.models.fourier import FourierPtychography

        gt = g.truth or {}
        z = np.asarray(gt["zernike"]) if "zernike" in gt else np.zeros(15)
        model = FourierPtychography(
            g.wavevectors, data.object_shape, data.frame_shape, wavelength=g.wavelength,
            na=data.params["na"], pixel_size=data.pixel_size, distance=g.distance or 0.0,
            zernike_indices=len(z), dtype=dtype,
        )  # fmt: skip
        model.zernike.data = torch.as_tensor(z, dtype=dtype)
        return model

    def plan_tiles(self, data, grid, *, margin=None, guard=None):
        """Tiles of the camera field, each seeing every LED's image cropped to it.

        Every tile, one alone included, gets a guard band (:attr:`ptytasks.tiling.Tile.
        guard`, default half the margin, as coded tiles): the model images the tile's
        object as if it were periodic, so near the crop's edge a measured pixel holds light
        from specimen outside the crop where the model's holds light wrapped round from the
        opposite edge. That holds at the camera field's own edge too, where no neighbouring
        tile takes over, so the band is left free there as well, and stitching does not
        trust the object under it (:func:`ptytasks.calibration.tile_weight`).
        """
        from ptytasks.tiling import Tile, plan_fullframe_tiles

        margin_px = int(self.tile_margin if margin is None else margin)
        guard_px = margin_px // 2 if guard is None else int(guard)
        tiles = plan_fullframe_tiles(data.frame_shape, grid, margin_px=margin_px,
                                     upsample=int(data.params.get("upsample", 1)))  # fmt: skip
        frames = list(range(data.n_frames))
        return [Tile.from_dict({**t.to_dict(), "frame_indices": frames, "guard": guard_px})
                for t in tiles]  # fmt: skip

    def band_limit(self, data):
        """Radius of the largest centred disc inside the synthetic aperture, cycles per
        object pixel: the union over LEDs of the pupil disc (radius ``NA / lambda``)
        centred on the LED's wavevector, sampled on the object's FFT grid. None when it
        covers every frequency up to Nyquist."""
        ny, nx = data.object_shape
        px = float(data.pixel_size)
        fy = np.fft.fftfreq(ny)[:, None]
        fx = np.fft.fftfreq(nx)[None, :]
        radius = float(data.params["na"]) / float(data.wavelength) * px
        covered = np.zeros((ny, nx), bool)
        for ky, kx in np.asarray(data.wavevectors, float) * px:
            covered |= (fy - ky) ** 2 + (fx - kx) ** 2 <= radius**2
        r = np.sqrt(fy**2 + fx**2)
        gaps = r[~covered & (r <= 0.5)]
        return float(gaps.min()) if gaps.size else None

    half_split_rule = "led-lattice"

    def half_split(self, data):
        """A checkerboard of the LED board: the wavevectors are mapped to the tangent plane,
        ``(ky, kx) / kz`` with ``kz = sqrt(1 / lambda^2 - |k|^2)`` (= the LED's ``(y, x) / z``
        on a flat board, a lattice however oblique the LED), and split by the parity of
        their lattice node, so each half keeps LEDs all around the centre and measures the
        whole synthetic aperture's band. In acquisition order the halves can each keep one
        side of a ring (the simulator's order: band limit 0.067 per half against 0.242).
        Alternate frames when the LEDs are not on a lattice (a dome)."""
        from ptytasks.metrics.frc import half_split_indices

        k = np.asarray(data.wavevectors, float)
        kz = np.sqrt(np.clip(1.0 / float(data.wavelength) ** 2 - (k**2).sum(1), 0, None))
        try:
            return half_split_indices(k / kz[:, None], method="lattice")
        except ValueError:
            return half_split_indices(data.n_frames)

    def simulate_keywords(self):
        return super().simulate_keywords() | {"frame_size"}

    def simulate(self, **kwargs):
        if "frame_size" in kwargs:  # one name for the frame side across modalities
            if "image_size" in kwargs:
                raise TypeError("give frame_size or image_size, not both")
            kwargs["image_size"] = kwargs.pop("frame_size")
        return super().simulate(**kwargs)


register(FourierModality())
