"""Typed options of the residual neural-field engine (:mod:`ptytasks.engines.rnf`).

A plain dataclass, so it serialises with :func:`dataclasses.asdict` into run metadata and
flows can build it from YAML/JSON dictionaries (``RNFOptions(**settings)``). Defaults are
the paper's (Methods): AdamW, learning rate 1e-3, betas (0.9, 0.999), weight decay 1e-5,
positions at 0.1 px per step, wavelet weight ``mu = 0.1``, phasor activation, hash
encoding 16 levels x 2 features, one hidden layer of 64 complex neurons.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ptytasks.engines.batching import BATCHING
from ptytasks.engines.options import EngineOptions
from ptytasks.fields.phasor_kernels import KERNEL_MODES, compile_pays

LOSSES = ("l1", "huber", "smooth_l1", "l2", "gradient", "poisson")
DOMAINS = ("amplitude", "intensity")
KERNELS = ("auto", *KERNEL_MODES)
# field coordinates (forward + backward) of a run above which "auto" compiles the kernels
COMPILE_MIN_COORDS = 5e7
# batch_size="auto": at most this many frames per step
AUTO_BATCH = 16
#: Boolean options whose ``"auto"`` is an attribute of the data's modality
#: (:meth:`RNFOptions.from_modality`); the pipeline keys these attributes.
AUTO_FROM_MODALITY = {"learn_background": "camera_background", "wavelet_spin": "spun_wavelet"}

#: Options taking one of a fixed set of values (``__post_init__`` checks them)
CHOICES = {"domain": DOMAINS, "batching": BATCHING,
           "eval_region": ("auto", "bbox", "full", "windows"), "kernels": KERNELS,
           "learn_positions": (True, False, "affine", "local"),
           "probe_aperture": (True, False, "auto"),
           **dict.fromkeys(AUTO_FROM_MODALITY, (True, False, "auto")),
           "mode_field": ("pixels", "neural"), "dtype": ("float32", "float64")}


@dataclass
class RNFOptions(EngineOptions):
    """Options of :func:`ptytasks.engines.rnf.reconstruct_rnf`.

    Optimisation
    ------------
    epochs : int
        Passes over all frames (frames are permuted every epoch).
    batch_size : int or "auto"
        Frames per optimiser step. ``"auto"`` (default): 16, fewer where the modality
        asks for a minimum number of steps per epoch (:meth:`batch_for`;
        ``Modality.min_steps_per_epoch``: 6 in the far field, so 25 frames take 5 per
        step and 15 frames 3; from 91 frames on, 16). Sparse far-field scans are limited
        by steps, not epochs: chosen on tuning cells only (near field lost 8 % with it,
        so it keeps 16), then on held-out cases 15 % kept at dose 1e6 0.41-0.50x the
        error of batch 16, 25 % kept 0.67-0.96x, at dose 1e4 0.96-1.0x; such runs take
        1.5-3x longer (``bench/results/records/rnf-batch-size-6274f46.json``).
        A larger batch on many frames (a quarter of them, up to 64: epochs 2.4-3.7x
        faster) passed simulated tuning cases but not the Siemens star (half-data FRC
        0.2577 against 0.2658 c/px), so it is not the default.
    lr : float
        AdamW rate of the neural fields (hash tables and MLP weights).
    betas, weight_decay : AdamW moments and decoupled weight decay of the fields. Physical
        parameters get no weight decay (it would pull a distance towards zero). The
        paper's 1e-5 is in effect none (1e-7 per step on the tables); 0.1 and 1.0 lost on
        the tuning cells, most in the sparse ones (hypothesis 30, docs/rnf.md).
    lr_positions : float
        Scan positions (pixels per step; the paper's 0.1). Fourier ptychography:
        the wavevectors, in spectrum pixels per step.
    lr_distance, lr_wavelength : float
        *Relative* rates: Adam's step is about ``lr`` in parameter units, so the engine
        uses ``lr_distance * |distance_0|`` (and likewise the wavelength); 1e-3 moves a
        5 % error in about 50 steps. With both learned they move together through one
        shadow (:class:`~ptytasks.engines.rnf_parts.Geometry`) at ``lr_distance``; a
        different ``lr_wavelength`` is then refused.
    lr_zernike : float
        Zernike pupil coefficients, radians per step (0.005). At 0.02 the self-calibration
        (Z4-Z8, 1.27 rad RMS) fell into a wrong basin on 2 of 3 tuning seeds (1.10 and
        0.92 rad left); 0.005 left 0.015-0.037 rad on all three (chosen among 0.02, 0.005
        and a 5- or 10-epoch warm-up) and 0.010-0.028 on held-out seeds 0, 4 and 6;
        seed 5 fails at either rate (0.72 / 0.68 rad;
        ``bench/results/records/rnf-zernike-rate-3940aa4.json``).
    lr_intensity : float
        Per-frame intensity factors (dimensionless, mean kept at 1).
    lr_background : float
        Per-frame background when learned, in units of each frame's mean intensity per
        step (0.1: chosen among 0.01, 0.03, 0.1 and 0.3 on simulated FPM tuning data with
        a noisy floor and without one; 0.01 and 0.03 had not reached the floor after 30
        epochs, 0.3 cost 25 % where there is none).
    lr_omega : float
        Phasor frequencies when ``learn_omega``.
    lr_probe_scale, lr_surface_scale, lr_pupil_scale : float
        Multipliers of ``lr`` for the probe, coded-surface and pupil fields.
    lr_tables_scale, lr_mlp_scale : float
        Multipliers of every field's rate for its hash tables (10) and its MLP weights
        (0.3). At the start the tables' features are ~1e-4, so the MLP can only move the
        field's constant part, which every MLP weight moves at once: at one rate for all,
        Adam sets the constant swinging (+-2 % in scale) and the error stalls for ~50 steps
        while the data loss recovers. Faster tables and a slower MLP halve the epochs to a
        given error from the uniform and from a learned prior (``docs/learned.md``).
    lr_decay : float
        Fraction of every rate a cosine schedule over ``epochs`` falls towards (1 =
        constant rates). The schedule is read at each epoch's start, so the last epoch
        runs a little above it (at 100 epochs 0.1 + 0.0002; at 2 epochs 0.55 for 0.1).
    warmup_epochs : int
        Epochs before physical parameters (positions, distance, wavelength, Zernike,
        intensities) start moving: the fields first explain the data roughly.
    probe_warmup_epochs : int or "auto"
        Epochs before the probe field starts learning (0: from the start), as PIE's
        ``probe_update_start``: the object first settles under the probe prior, so that
        with few, noisy frames the probe residual does not soak up object structure
        and noise. ``"auto"`` (default): 75 % of ``epochs`` where the data-term rule finds
        the frames photon-starved (``loss: auto``; fewer than 20 photons per object pixel,
        not concentrated in a few bright pixels), else 0
        (:data:`ptytasks.engines.data_term.STARVED_PROBE_WARMUP`; hypotheses 40 and 44 in
        ``docs/rnf.md``: held out on fresh 1e4 sparse cases, median ratio 0.92 / 0.85).
        As run: ``result.extras["data_term"]["probe_warmup_epochs"]``.
    probe_aperture : bool or "auto"
        Far field: the probe's prior is a learned aperture on the detector plane (radius,
        centre and the Fresnel coefficient's scale, started at the start probe's support
        and defocus: :class:`ptytasks.engines.aperture_probe.ApertureProbe`) instead of
        the fixed start; the probe residual stays on top. ``"auto"`` (default): where the
        data-term rule finds the frames photon-starved (as ``probe_warmup_epochs``) and
        the data carry no probe of their own (the prior is an estimate: the blind start),
        for a single-mode probe whose start is disk-like
        (:data:`~ptytasks.engines.aperture_probe.DISK_MISFIT_MAX`). Hypothesis 64
        (``docs/rnf.md``): at 2 counts per pixel the start's pupil edge is most of its
        error. As run: ``result.extras["probe_aperture"]``.
    lr_aperture : float
        Adam's step of the aperture's radius and centre (detector pixels) and of its
        defocus scale (relative), per optimiser step (0.01, the prototype's; not tuned).

    Loss
    ----
    loss : {"auto", "l1", "smooth_l1", "huber", "l2", "gradient", "poisson"}
        Data term (Methods). ``"auto"`` (default): smooth L1 where the frames are counts
        with at least 20 photons per object pixel *and* a 30-iteration rPIE prefit
        explains them to their Poisson noise, else L1 (:mod:`ptytasks.engines.data_term`;
        hypotheses 20-21, 24 and 67 in ``docs/rnf.md``:
        chosen on tuning cases; held out, the simulated 100 %-kept far field at dose 1e4
        goes from 0.23 to 0.12, under PtyRAD's 0.14, fresh 15 %-kept scans at dose 1e6 from
        0.089 to 0.074 (median of three), while the Siemens star, whose counts a one-mode
        fit does not explain, keeps L1); where whole-number frames hold fewer than 20
        photons per object pixel, the Poisson likelihood with ``mu`` 1 (hypothesis 38),
        unless the brightest 1 % of the mean pattern's pixels hold more than half its
        photons (a Gaussian-like beam): then smooth L1 with ``mu`` 0.1 (hypothesis 59).
        The choice is in ``result.extras["data_term"]``.
        ``"smooth_l1"``: quadratic for residuals within
        ``huber_delta``, L1 beyond (``delta = 0`` is L1); with the noise threshold it is
        the option for low-dose counts: L1 fits each pixel's median count, 0 wherever fewer
        than ln 2 photons are expected, and held RNF at its flat start at dose 1e4
        (``docs/rnf.md``, hypotheses: default in bb3e1b4, reverted for the measured star and
        a learned-prior acceptance test). ``"poisson"`` is the Poisson negative
        log-likelihood of the intensities (``domain`` is then ignored).
    domain : {"amplitude", "intensity"}
        Compare ``sqrt(I)`` (default) or ``I``.
    huber_delta : float or "noise"
        Threshold of the smooth-L1 / Huber loss, in units of the normalised amplitude (the
        engine scales frames to unit mean per pixel). ``"noise"`` (default): four times
        the Poisson noise of an amplitude, ``2 / sqrt(scale)`` with ``scale`` the engine's
        data scale (mean counts per pixel; Fourier: of the centre LED's image), when the
        frames are counts (whole numbers); otherwise L1 (smooth L1) or 0.1 (Huber)
        (:func:`ptytasks.engines.losses.noise_threshold`).
    mu : float or "auto"
        Weight of the Haar-wavelet L1 sparsity of the object residual, ``mu * L / N``
        (N object pixels). ``"auto"`` (default): 0.1 (the paper's), but where ``loss="auto"``
        picks smooth L1, ``6.8 / (R sqrt(m))`` (``R`` measured pixels per object pixel,
        ``m`` mean counts per pixel: the data's amount and precision), and 1 where it picks
        the Poisson term (photon-starved counts); 0 in Fourier ptychography (hypothesis
        68: the determinable object is band-limited, its edges ring).
    wavelet_levels : int
        Haar decomposition levels.
    wavelet_spin : bool or "auto"
        Cycle-spun wavelet term (:func:`ptytasks.engines.losses.wavelet_sparsity`): every
        neighbouring pixel pair penalised alike, not only those inside the 2 x 2 blocks.
        ``"auto"`` (default): where the modality says (``Modality.spun_wavelet``: near
        field). On every modality it failed the tuning rule (geomean 0.971, far field 15 %
        kept 1.05x; hypothesis 31); in the near field it gave 0.75x on the tuning cell and
        0.88-0.91x on two held-out cases, 0.99x on the third (hypothesis 32).

    Fields
    ------
    residual : bool
        Learn ``O = O_prior + F(r)`` (True) or ``O = F(r)`` ab initio (False).
    activation : str
        ``"phasor"`` (paper) or an ablation (``"ctanh"``, ``"crelu"``, ``"zrelu"``,
        ``"modrelu"``, ``"modulus_relu"``, ``"split_relu"``, ``"split_sine"``).
    omega : float
        Phasor frequency of the first layer (hidden layers: ``hidden_omega``).
    learn_omega : bool
        Make the frequencies trainable (paper Eq. 4). No gain on the tuning cells (geomean
        1.005; hypothesis 34, docs/rnf.md), so off.
    hidden_features : int
        MLP width in complex neurons (64, the paper's).
    hidden_layers : int
        Hidden-to-hidden phasor layers after the input layer (1). 0 (input layer, 64
        complex phasor neurons, output) is 2-2.2x faster per epoch and matched 1 on the
        tuning cases (median error ratio 0.985), but on held-out tests it lost the raster
        scan's robustness (periodic error ePIE / RNF 10.3 -> 0.55) and position correction
        (2 px case: 2.7x instead of >= 3x reduction), so 1 stays (``docs/rnf.md``).
    hidden_precision : {"float32", "bfloat16", "auto"}
        dtype of the MLP's hidden-to-hidden products (``MLPConfig.hidden_precision``).
        ``"auto"`` (default): bfloat16 where the device multiplies it natively (AVX512-BF16
        / AMX CPUs, CUDA), else float32. On the 100 x 64^2 far-field set at dose 1e6
        (blind start, seeds 1-3, 60 epochs) the complex error was 0.0160 / 0.0164 / 0.0162
        against float32's 0.0160 / 0.0173 / 0.0160, at 1.25x less time per epoch.
    out_init_scale : float or None
        Output-layer initial scale (None: the field module's default).
    encoding : dict
        Overrides of :class:`ptytasks.fields.hash_encoding.HashEncodingConfig`
        (``n_levels``, ``n_features``, ``log2_table_size``, ``base_resolution``,
        ``per_level_scale``, ``level_policy``).
    anneal_epochs : float
        Coarse-to-fine: the object field's hash levels are switched on one after another
        over this many epochs (BARF-style; 0 = all levels from the start). Widens the
        capture range of position learning.
    batching : {"random", "compact"}
        Frames of a batch drawn at random, or spatially compact groups (regrouped every
        epoch, visited in random order; :mod:`ptytasks.engines.batching`), whose smaller
        bounding box makes a step cheaper. Fourier ptychography always draws at random.
    eval_region : {"auto", "bbox", "full", "windows"}
        Evaluate the object field on the batch windows' bounding box, on the whole grid,
        or whichever is smaller (``"auto"``: the box when it is under ``bbox_fraction`` of
        the object); ``"windows"``: the bounding box (as ``"bbox"``), but the network
        only under the batch's windows (widened to whole wavelet blocks; zero residual elsewhere, so
        the wavelet term acts on those pixels only). 61-76 % of the region lies under a
        random 16-frame batch's windows, so a star epoch is 1.2-1.3x faster; not the
        default: on a strict 7 x 7 raster it doubled the complex error on 3 of 4 seeds
        (``docs/rnf.md``).
    kernels : {"auto", "eager", "compiled"}
        The field MLP's element-wise steps as eager torch kernels or fused by
        ``torch.compile`` (:mod:`ptytasks.fields.phasor_kernels`: same numbers to float32
        rounding; the field's forward + backward 1.15-1.25x faster on CPU; compiling costs
        ~20 s once per machine, ~3 s in a later process, and falls back to eager with a
        warning where it fails). ``"auto"``: compiled when the run's field work, epochs x
        steps per epoch x object pixels, reaches ``COMPILE_MIN_COORDS`` (5e7 coordinates,
        about 2 min of field work on one CPU thread), so that compiling costs a small part
        of the run, and only where compiling pays (CUDA, a CPU with AVX-512:
        :func:`~ptytasks.fields.phasor_kernels.compile_pays`); eager elsewhere.
    cuda_graphs : bool
        On CUDA, replay the steps that are the same computation every time (nothing but
        the fields learned, a full batch, the whole object evaluated) from a CUDA graph
        (:mod:`ptytasks.engines.rnf_step`): the same update, without the host issuing
        ~500 kernels per step. Ignored on CPU.

    What is learned
    ---------------
    learn_probe, learn_surface, learn_pupil : bool
        Residual fields for the probe, the coded surface, the Fourier pupil.
    probe_modes : int
        Incoherent probe modes (mixed state): one probe field with this many complex
        outputs; a prior with fewer modes gets extra ones
        (:func:`ptytasks.physics.modes.add_modes`). The result's modes are orthogonalised
        and their power fractions reported (``extras["mode_power_fractions"]``).
    n_slices : int
        Object slices (a thick specimen): one object field with a complex output per
        slice, spaced by the data's ``params["slice_distance"]``; the result's object is
        ``(slices, ny, nx)``, the beam's entrance first.
    lr_mode_gains : float
        Rate of the per-mode log-amplitude gains (mixed state only).
    mode_field : {"pixels", "neural"}
        How the probe modes' residual is represented: per pixel (``PixelField``) or as one
        residual neural field with a complex output per mode.
    lr_mode_pixels : float
        Rate of the per-pixel mode residuals (amplitudes in units of the root mean
        count per pixel). Chosen from 0.025 / 0.05 / 0.1 / 0.2 / 0.4 on tuning seeds 10 and
        11 (simulated far field, 3 modes 0.6 / 0.3 / 0.1, 200 epochs; lowest median object
        error: 0.0216 / 0.0211 / 0.0234 / 0.0286 / 0.0389), scored on other seeds
        (``docs/modes-and-slices.md``).
    lr_mode_decay : float
        The modes' rates (per-pixel residuals and gains) fall over the run on a cosine to
        this fraction of their start (on top of ``lr_decay``): at a constant rate the
        mixed state's object error wandered by +-10 % from epoch to epoch after ~150
        epochs (seed 1: 0.023-0.029). Chosen from 1 / 0.3 / 0.1 / 0.03 on tuning seeds 10
        and 11 (3 modes 0.6 / 0.3 / 0.1, 200 epochs, two threads; median object error
        0.0200 / 0.0192 / 0.0187 / 0.0187); held out, seeds 0 / 1 / 2: 4.21 / 2.18 /
        2.75x lower error than one mode (at 1: 3.22 / 1.86 / 2.18x), fractions within
        0.008 (``bench/rnf_mode_tuning.py``, ``records/rnf-lr-mode-decay-cbd8564.json``).
        Mixed state only.
    mode_start_fraction : float
        Power share each added mode starts with (:func:`~ptytasks.physics.modes.add_modes`;
        capped so the added modes together hold at most 0.9). Chosen from 0.05 / 0.15 /
        0.3 on tuning seeds 10 and 11 (3 modes 0.6 / 0.3 / 0.1, 200 epochs; median error
        ratio to 0.05: 0.96 / 0.935 -> 0.3); held out, seeds 0 / 1 / 2: 3.22 / 2.03 /
        2.18x lower error than one mode, fractions within 0.005 (at 0.05: 1.75 / 2.02 /
        2.18x; seed 0's fractions 0.055 off) (``records/rnf-mode-start-d6c8915.json``). The
        weak start let the extra modes' power stall on some seeds: from 30 % each, the
        surplus drains to the true split.
    learn_positions : bool, "affine" or "local"
        Scan positions (scanning data) or LED wavevectors (Fourier): ``True`` learns each
        frame's own; ``"affine"`` (scanning data) learns one map of the whole scan,
        ``p = c + (I + D)(p0 - c)`` about its centroid ``c`` (scale, shear, rotation: a scan
        or pixel-size calibration; 4 numbers, no per-frame freedom to fit noise), at
        ``lr_positions / r_rms`` per step (``r_rms``: the scan's RMS radius, px), so an
        edge frame moves about ``lr_positions`` px per step; ``extras["position_affine"]``.
        ``"local"`` (scanning data) learns each frame's own correction without the scan's
        global part: after every step the least-squares affine map (shift, scale, shear,
        rotation) of the corrections ``p - p0`` over ``p0 - c`` is subtracted, and Adam's
        ``eps`` for the positions is ``LOCAL_POSITION_EPS`` (px-gradient units), so small,
        noisy gradients take small steps. On exact simulated scans from a blind probe the
        scan's affine part drifts under ``True`` (0.22 px RMS, 0.10 px of it not affine;
        error 1.55x on a tuning case), ``"local"`` 1.07x there; over the five tuning cells
        1.038x geomean against ``True``'s 1.18x. On the Siemens star (seed 1) it gives
        0.2676 c/px against 0.2658 without and 0.2787 with ``True``: the star's gain is the
        scan's scale (``docs/rnf.md``, hypotheses 8-9).
    learn_distance, learn_wavelength, learn_zernike, learn_intensity :
        Physical parameters of the forward model.
    learn_background : bool or "auto"
        Learn a per-frame additive floor ``b_j >= 0`` of the predicted intensities
        (:meth:`ForwardModel.enable_background`; camera offset, stray light), started at
        each frame's minimum; ``extras["background"]`` holds it in the frames' units.
        ``"auto"`` (default): where the modality's frames are camera images
        (``Modality.camera_background``: Fourier ptychography), not from counting
        detectors. Measured (docs/rnf.md, hypotheses; ``bench/results/records/
        rnf-background-*.json``): on simulated FPM with a noisy floor the error about
        halves (0.44-0.47 -> 0.23-0.27), without one it costs ~4 %; on the grid's held-out
        Fourier cases the median goes 0.104 -> 0.098; on the measured blood smear the
        half-data FRC of a 48 px crop goes from 0.131 c/px to the 0.333 band bound and
        each half predicts the other's dark-field images 16 % better (floors fitted).
    fix_mean_position : bool
        Remove the mean position correction after each step (a common shift is only a
        translation of the image).
    rescale_prior : bool
        Match the priors' power to the data (the probe when it was derived from the data,
        else the uniform object's level).

    Run
    ---
    plateau_patience : int
        Stop when the epoch loss has not improved by ``plateau_tol`` (relative) for this
        many epochs (0: never stop early).
    plateau_tol : float
    checkpoint_every : int
        Epochs between checkpoint writes (when a checkpoint path is given).
    seed : int
        Seeds the fields' initialisation and the frame order.
    device : str
    dtype : {"float32", "float64"}
        Real dtype (complex fields use the matching complex dtype).
    """

    epochs: int = 50
    batch_size: int | Literal["auto"] = "auto"
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-5
    lr_positions: float = 0.1
    lr_distance: float = 1e-3
    lr_wavelength: float = 1e-3
    lr_zernike: float = 0.005
    lr_intensity: float = 1e-3
    lr_omega: float = 1e-3
    lr_probe_scale: float = 1.0
    lr_surface_scale: float = 1.0
    lr_pupil_scale: float = 1.0
    lr_tables_scale: float = 10.0
    lr_mlp_scale: float = 0.3
    lr_decay: float = 1.0
    warmup_epochs: int = 0
    probe_warmup_epochs: int | Literal["auto"] = "auto"
    probe_aperture: bool | Literal["auto"] = "auto"
    lr_aperture: float = 0.01

    loss: Literal["auto", "l1", "huber", "smooth_l1", "l2", "gradient", "poisson"] = "auto"
    domain: Literal["amplitude", "intensity"] = "amplitude"
    huber_delta: float | Literal["noise"] = "noise"
    mu: float | Literal["auto"] = "auto"
    wavelet_levels: int = 1
    wavelet_spin: bool | Literal["auto"] = "auto"

    residual: bool = True
    activation: str = "phasor"
    omega: float = 10.0
    hidden_omega: float = 1.0
    learn_omega: bool = False
    hidden_features: int = 64
    hidden_layers: int = 1
    hidden_precision: Literal["float32", "bfloat16", "auto"] = "auto"
    out_init_scale: float | None = None
    encoding: dict = field(default_factory=dict)
    anneal_epochs: float = 0
    batching: Literal["random", "compact"] = "random"
    eval_region: Literal["auto", "bbox", "full", "windows"] = "auto"
    bbox_fraction: float = 0.7
    kernels: Literal["auto", "eager", "compiled"] = "auto"
    cuda_graphs: bool = True

    learn_probe: bool = True
    probe_modes: int = 1
    n_slices: int = 1
    lr_mode_gains: float = 1e-2
    mode_field: Literal["pixels", "neural"] = "pixels"
    lr_mode_pixels: float = 0.05
    lr_mode_decay: float = 0.1
    mode_start_fraction: float = 0.3
    learn_surface: bool = False
    learn_pupil: bool = False
    learn_positions: bool | Literal["affine", "local"] = False
    learn_distance: bool = False
    learn_wavelength: bool = False
    learn_zernike: bool = False
    learn_intensity: bool = False
    learn_background: bool | Literal["auto"] = "auto"
    lr_background: float = 0.1
    fix_mean_position: bool = True
    rescale_prior: bool = True

    plateau_patience: int = 0
    plateau_tol: float = 1e-3
    checkpoint_every: int = 1
    seed: int = 0
    device: str = "cpu"
    dtype: Literal["float32", "float64"] = "float32"

    def batch_for(self, n_frames: int, min_steps: int = 1) -> int:
        """Frames per step for a run on ``n_frames`` frames: ``batch_size``, or for
        ``"auto"`` at most ``AUTO_BATCH`` and small enough for ``min_steps`` steps per
        epoch (the modality's ``min_steps_per_epoch``)."""
        if self.batch_size != "auto":
            return max(1, int(self.batch_size))
        return int(max(1, min(AUTO_BATCH, -(-int(n_frames) // max(1, int(min_steps))))))

    def from_modality(self, name: str, data) -> bool:
        """Option ``name`` (a key of :data:`AUTO_FROM_MODALITY`) for ``data``, with
        ``"auto"`` read from its modality."""
        from ptytasks.modalities import modality_of

        value = getattr(self, name)
        return getattr(modality_of(data), AUTO_FROM_MODALITY[name]) if value == "auto" \
            else bool(value)

    @classmethod
    def _resolved_defaults(cls) -> dict:
        # what "auto" resolves by at run time: a stored tile made under other constants
        # must not be reused (the pipeline hashes these into its step keys)
        from ptytasks.engines import data_term as T
        from ptytasks.modalities import get, names

        # the modality attributes RNF's "auto" options read
        by_modality = {n: {a: getattr(get(n), a) for a in (
            *AUTO_FROM_MODALITY.values(), "min_steps_per_epoch", "band_only_object",
            "rnf_wavelet_weight")}
            for n in names()}
        from ptytasks.engines.aperture_probe import DISK_MISFIT_MAX

        return {"auto_batch": AUTO_BATCH, "compile_min_coords": COMPILE_MIN_COORDS,
                "modalities": by_modality, "aperture_disk_misfit_max": DISK_MISFIT_MAX,
                "data_term": {k: getattr(T, k) for k in (
                    "PHOTONS_PER_PIXEL_MIN", "FIT_CHI2_MAX",
                    "PREFIT_ITERATIONS", "PREFIT_SEED", "MIN_MODEL_COUNT", "MU_SCALE",
                    "MU_DEFAULT", "MU_STARVED", "STARVED_PROBE_WARMUP")}}

    def long_run(self, n_frames: int, object_pixels: int, min_steps: int = 1) -> bool:
        """Whether the run's field work, epochs x steps x ``object_pixels``, reaches
        ``COMPILE_MIN_COORDS`` (``min_steps`` as in :meth:`batch_for`)."""
        steps = -(-int(n_frames) // self.batch_for(n_frames, min_steps))
        return float(self.epochs) * steps * int(object_pixels) >= COMPILE_MIN_COORDS

    def field_kernels(self, n_frames: int, object_pixels: int, min_steps: int = 1) -> str:
        """``"eager"`` or ``"compiled"`` (``kernels``; ``"auto"``: compiled for a
        :meth:`long_run` where :func:`compile_pays`)."""
        if self.kernels != "auto":
            return self.kernels
        long = self.long_run(n_frames, object_pixels, min_steps)
        return "compiled" if long and compile_pays(self.device) else "eager"

    def __post_init__(self):
        if self.loss != "auto" and self.loss not in LOSSES:
            raise ValueError(f"loss must be 'auto' or one of {LOSSES}; got {self.loss!r}")
        if self.mu != "auto" and (isinstance(self.mu, (bool, str)) or self.mu < 0):
            raise ValueError(f"mu must be a number >= 0 or 'auto'; got {self.mu!r}")
        if self.huber_delta != "noise" and not (
                isinstance(self.huber_delta, (int, float)) and self.huber_delta >= 0):
            raise ValueError(f"huber_delta must be a number >= 0 or 'noise'; got "
                             f"{self.huber_delta!r}")
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                # booleans as a YAML or JSON settings file spells them
                shown = ", ".join(str(v).lower() if isinstance(v, bool) else repr(v)
                                  for v in allowed)
                raise ValueError(f"{name} must be one of {shown}; got {getattr(self, name)!r}")
        for name, least in (("batch_size", 1), ("probe_warmup_epochs", 0)):
            value = getattr(self, name)
            if value != "auto" and (isinstance(value, (bool, str)) or int(value) < least):
                raise ValueError(f"{name} must be 'auto' or >= {least}; got {value!r}")
        if self.epochs < 0:
            raise ValueError("epochs must be >= 0")
        if isinstance(self.hidden_layers, bool) or self.hidden_layers not in (0, 1, 2):
            # deeper phasor stacks overflow at initialisation (the modulus exp(-w Im z)
            # compounds layer by layer: NaN from 3 layers on)
            raise ValueError(f"hidden_layers must be 0, 1 or 2; got {self.hidden_layers!r}")
        if self.learn_distance and self.learn_wavelength and \
                self.lr_wavelength != self.lr_distance:
            raise ValueError("with learn_distance and learn_wavelength both on, distance and "
                             "wavelength move together at lr_distance; lr_wavelength "
                             f"({self.lr_wavelength}) would be ignored: leave it equal")
        self.betas = tuple(float(b) for b in self.betas)
