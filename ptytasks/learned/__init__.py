"""ptytasks.learned: learned image priors for the reconstruction engines.

* :mod:`~ptytasks.learned.synthetic` formula-driven dead-leaves training images;
* :mod:`~ptytasks.learned.dncnn` DnCNN with RealSN (Lipschitz-bounded residual);
* :mod:`~ptytasks.learned.train_denoiser` the training script
  (``python -m ptytasks.learned.train_denoiser --help``).

Submodules are imported on use; this package pulls in nothing heavy.
"""

from pathlib import Path

#: The committed default denoiser weights (and their ``.json`` provenance beside them).
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "dncnn_default.pt"
