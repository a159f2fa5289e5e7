"""Near-field (Fresnel) ptychography: a structured probe scanned over the specimen,
holograms on a detector a short distance behind it (a divergent beam magnifies them)."""

from __future__ import annotations

from ptytasks.modalities.base import Modality, register
from ptytasks.modalities.farfield import FarFieldModality


class NearFieldModality(Modality):
    name = "nearfield"
    fresnel_scaled = True
    pixel_detector = True  # X-ray / electron counting detectors (ptytasks.detector)
    blind_probe = "near_field_phase"
    spun_wavelet = True  # RNF's wavelet term (hypothesis 32)
    tile_margin = 0.5  # probe widths
    requires = (("positions_px", "positions_px (scan positions)"),
                ("distance", "distance (metres)"))  # fmt: skip
    simulator = "ptytasks.simulate.datasets:simulate_nearfield"
    plan_tiles = FarFieldModality.plan_tiles  # both scan a localized probe

    def build_model(self, data, g, dtype):
        from ptytasks.physics.models.nearfield import NearField

        return NearField(g.positions_px, data.object_shape, data.frame_shape,
                         wavelength=g.wavelength, distance=g.distance,
                         pixel_size=data.pixel_size, dtype=dtype)  # fmt: skip


register(NearFieldModality())
