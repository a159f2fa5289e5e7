"""ptytasks.fields: neural-field building blocks (pure PyTorch, CPU and GPU).

* :class:`HashEncoding2D` multiresolution hash encoding (instant-NGP) with dense-level and
  full-grid fast paths;
* :class:`ComplexLinear`, :class:`ComplexMLP` complex layers in real arithmetic,
  :class:`SplitRealMLP` split-channel ablation, :func:`build_mlp`;
* complex activations (:class:`Phasor` and ablations) on the split ``(2, C, ...)`` layout;
* :class:`ResidualField` prior + MLP(hash(r)) on a pixel grid;
* :func:`haar2d` / :func:`haar_wavedec2` Haar wavelets (the sparsity prior lives in
  :mod:`ptytasks.engines.losses`).
"""

from ptytasks.fields.activations import (
    ACTIVATIONS,
    ComplexTanh,
    CReLU,
    ModReLU,
    ModulusReLU,
    Phasor,
    ZReLU,
    from_split,
    make_activation,
    to_split,
)
from ptytasks.fields.complex_layers import (
    ComplexLinear,
    ComplexMLP,
    MLPConfig,
    SplitRealMLP,
    build_mlp,
)
from ptytasks.fields.haar import haar2d, haar_wavedec2, ihaar2d
from ptytasks.fields.hash_encoding import (
    HashEncoding2D,
    HashEncodingConfig,
    level_resolutions,
    pixel_to_unit,
)
from ptytasks.fields.residual_field import ResidualField

__all__ = [
    "ACTIVATIONS",
    "ComplexLinear",
    "ComplexMLP",
    "ComplexTanh",
    "CReLU",
    "HashEncoding2D",
    "HashEncodingConfig",
    "MLPConfig",
    "ModReLU",
    "ModulusReLU",
    "Phasor",
    "ResidualField",
    "SplitRealMLP",
    "ZReLU",
    "build_mlp",
    "from_split",
    "haar2d",
    "haar_wavedec2",
    "ihaar2d",
    "level_resolutions",
    "make_activation",
    "pixel_to_unit",
    "to_split",
]
