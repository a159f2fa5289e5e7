"""Forward models, one class per modality, over a shared interface (:mod:`.base`)."""

from ptytasks.physics.models.base import ForwardModel
from ptytasks.physics.models.coded import Coded
from ptytasks.physics.models.farfield import FarField
from ptytasks.physics.models.fourier import FourierPtychography
from ptytasks.physics.models.nearfield import NearField

__all__ = ["Coded", "FarField", "ForwardModel", "FourierPtychography", "NearField"]
