"""Far-field (Fraunhofer) ptychography: a localized probe scanned over the specimen,
diffraction patterns on a distant detector."""

from __future__ import annotations

from ptytasks.modalities.base import Modality, register


class FarFieldModality(Modality):
    name = "farfield"
    far_field_detector = True
    pixel_detector = True  # X-ray / electron counting detectors (ptytasks.detector)
    min_steps_per_epoch = 6  # RNF's sparse scans are limited by steps (batch_size "auto")
    blind_probe = "far_field_pie"
    tile_margin = 0.5  # probe widths
    requires = (("positions_px", "positions_px (scan positions)"),)
    simulator = "ptytasks.simulate.datasets:simulate_farfield"

    def build_model(self, data, g, dtype):
        from ptytasks.physics.models.farfield import FarField

        return FarField(g.positions_px, data.object_shape, data.frame_shape, dtype=dtype)

    def plan_tiles(self, data, grid, *, margin=None, guard=None):
        from ptytasks.tiling import plan_scanning_tiles

        return plan_scanning_tiles(data.positions_px, data.frame_shape, grid,
                                   margin_probe_widths=self.tile_margin if margin is None
                                   else margin)  # fmt: skip

    def sample_pixel(self, wavelength, distance, detector_pixel, frame_shape):
        # The far-field sampling lambda z / (N dx): per axis, so one pixel for both axes
        # only where the frames are square (an N_y x N_x frame has pixels lambda z / (N_y dx)
        # by lambda z / (N_x dx), which the square object grid cannot hold)
        if distance is None or detector_pixel is None:
            return None
        if frame_shape[0] != frame_shape[1]:
            raise ValueError(f"far-field frames of {frame_shape[0]}x{frame_shape[1]} give "
                             "object pixels of two sizes: crop the frames square or pass "
                             "pixel_size= (m)")
        return float(wavelength) * float(distance) / (frame_shape[0] * float(detector_pixel))


register(FarFieldModality())
