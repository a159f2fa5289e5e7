"""Ptychography modalities as registered parts: far field, near field, coded, Fourier.

``modality_of(data)`` gives the object holding what varies by modality (forward model,
tile planning, the illumination's kind, validation needs, simulator); ``model_for(data)``
is the one way to build a dataset's forward model.
"""

from ptytasks.modalities.base import Geometry, Modality, get, modality_of, names, register
from ptytasks.modalities.models import model_for

# The built-in modalities register themselves on import, in the documented order.
# isort: off
from ptytasks.modalities import farfield, nearfield, coded, fourier  # noqa: E402, F401
# isort: on

__all__ = ["Geometry", "Modality", "get", "modality_of", "model_for", "names", "register"]
