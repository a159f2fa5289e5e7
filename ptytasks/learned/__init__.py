"""ptytasks.learned: learned image priors for the reconstruction engines.

* :mod:`~ptytasks.learned.synthetic` formula-driven dead-leaves training images;
* :mod:`~ptytasks.learned.dncnn` DnCNN with RealSN (Lipschitz-bounded residual);
* :mod:`~ptytasks.learned.train_denoiser` the training script
  (``python -m ptytasks.learned.train_denoiser --help``);
* :mod:`~ptytasks.learned.single_shot_data`, :mod:`~ptytasks.learned.polar_attention`,
  :mod:`~ptytasks.learned.inversion`, :mod:`~ptytasks.learned.train_inversion`: single-shot
  inversion networks (PPN, PtychoNN), their data and training (``ptyflow train-learned``;
  ``docs/learned.md``).

Submodules are imported on use; this package pulls in nothing heavy.
"""

from pathlib import Path

#: The committed default denoiser weights (and their ``.json`` provenance beside them).
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "dncnn_default.pt"
