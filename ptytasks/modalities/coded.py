"""Coded ptychography: the specimen scanned over a coded surface (a thin diffuser on the
sensor), full-frame illumination, near-field propagation to the detector."""

from __future__ import annotations

import numpy as np

from ptytasks.modalities.base import Modality, register


class CodedModality(Modality):
    name = "coded"
    localized_probe = False
    has_surface = True
    tile_margin = 16  # detector pixels
    requires = (("positions_px", "positions_px (scan positions)"),
                ("distance", "distance (metres)"),
                ("params.surface_distance", "params['surface_distance'] (metres)"))  # fmt: skip
    simulator = "ptytasks.simulate.coded_fourier:simulate_coded"

    def build_model(self, data, g, dtype):
        import torch

        from ptytasks.physics.models.coded import Coded

        surface = g.truth.get("surface") if g.truth is not None else data.meta.get("surface")
        return Coded(
            g.positions_px, data.object_shape, data.frame_shape,
            wavelength=g.wavelength, distance=g.distance,
            surface_distance=data.params["surface_distance"], pixel_size=data.pixel_size,
            surface=None if surface is None else torch.as_tensor(np.asarray(surface)),
            dtype=dtype,
        )  # fmt: skip

    def plan_tiles(self, data, grid, *, margin=None, guard=None):
        from ptytasks.tiling import plan_fullframe_tiles

        margin_px = int(self.tile_margin if margin is None else margin)
        guard_px = margin_px // 2 if guard is None else int(guard)
        return plan_fullframe_tiles(data.frame_shape, grid, margin_px=margin_px,
                                    positions=data.positions_px, guard_px=guard_px)  # fmt: skip


register(CodedModality())
