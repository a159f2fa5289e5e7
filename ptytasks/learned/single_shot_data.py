"""Training data for learned single-shot inversion: object patches and their far-field frames.

PtychoNN (Cherukara et al. 2020), PtychoFormer and PPN (Nakahata et al. 2024; the PPN paper
is its journal form) learn the map from ONE diffraction pattern to the object under the
probe. This module streams seeded training batches made with the same probe and FFT
convention as :func:`ptytasks.simulate.simulate_farfield`, with the papers' measurement
model (their eq. 2)::

    I = Poisson(eta |F{ mu P(r - r_j - dr_j) O(r) + (1 - mu) P(r - r_j - dr_j) E_r[O] }|^2)
        + N(0, sigma^2)

``mu`` the coherence factor, ``eta`` the detector efficiency, ``dr_j`` the positional
jitter (the target stays the object at the nominal window) and ``sigma`` the readout noise
in counts. ``F`` is the unitary centred FFT (``docs/conventions.md``). The network input is
``log(1 + I F_ref / F) / log(1 + F_ref)`` (:func:`normalize_frames`): the papers' ``log(1 + I)``
with the frame rescaled to a reference flux ``F_ref`` photons (``F = sum |P|^2``), so one
network serves every dose.

Nothing is held in memory beyond a small pool of object canvases (``pool`` images of
``canvas`` pixels) from which random windows are cut; one canvas is redrawn every
``refresh`` batches. Everything is seeded: the same seed gives the same batches.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ptytasks.physics.fft import fft2c
from ptytasks.physics.shifts import extract_patches

REFERENCE_FLUX = 1e6  # photons per frame the input is normalised to (the noise-free flux)
#: Object images the generator trains on; ``camera``, ``moon``, ``astronaut``, ``usaf``,
#: ``siemens`` and the other bundled pictures are held out for testing.
TRAIN_KINDS: tuple[str, ...] = ("dead_leaves", "dead_leaves", "blobs")  # fmt: skip


@dataclass
class Geometry:
    """The far-field geometry a single-shot network is trained for.

    Attributes
    ----------
    frame_size : int
        Detector frame side ``N``, pixels (the probe window is ``N x N`` object pixels).
    probe_diameter_px : float or None
        Zone-plate footprint diameter, object pixels (default ``0.35 N``, the simulator's).
    out_size : int or None
        Side ``M`` of the predicted object patch, centred on the probe. Default: ``N // 2``
        when it holds the footprint (``D <= N / 2``; the rest of the window is not
        illuminated), else the whole window ``N``.
    energy_ev, detector_distance, detector_pixel : float
        As :func:`ptytasks.simulate.simulate_farfield` (eV, metres, metres).
    """

    frame_size: int = 32
    probe_diameter_px: float | None = None
    out_size: int | None = None
    energy_ev: float = 8000.0
    detector_distance: float = 2.0
    detector_pixel: float = 75e-6

    @property
    def diameter(self) -> float:
        return float(self.probe_diameter_px or 0.35 * self.frame_size)

    @property
    def out(self) -> int:
        if self.out_size:
            return int(self.out_size)
        n = int(self.frame_size)
        return n // 2 if self.diameter <= n / 2 else n

    @property
    def crop(self) -> slice:
        """Window rows (and columns) of the predicted patch, centred on ``N // 2``."""
        a = self.frame_size // 2 - self.out // 2
        return slice(a, a + self.out)


def zone_plate(geometry: Geometry, flux: float = REFERENCE_FLUX) -> np.ndarray:
    """The simulator's defocused zone-plate probe (complex64 ``(N, N)``, ``sum |P|^2 = flux``).

    Same construction as :func:`ptytasks.simulate.simulate_farfield` with ``probe=
    "zone_plate"``: outer zone 1.25 object pixels, defocus set so that the geometric
    footprint is ``geometry.diameter`` pixels.
    """
    from ptytasks.simulate import simulated_zone_plate
    from ptytasks.simulate._common import H_C_EV_M

    n = int(geometry.frame_size)
    lam = H_C_EV_M / geometry.energy_ev
    px = lam * geometry.detector_distance / (n * geometry.detector_pixel)
    p = simulated_zone_plate((n, n), px, lam, geometry.diameter)
    p = p / torch.sqrt((p.abs() ** 2).sum())
    return (p * math.sqrt(flux)).numpy().astype(np.complex64)


@dataclass
class NoiseModel:
    """Ranges of the measurement model; each sample draws its own values.

    Attributes
    ----------
    dose : (float, float)
        Photons per frame, drawn log-uniformly (equal values: a fixed dose).
    readout_sigma : (float, float)
        Gaussian readout noise standard deviation, counts (uniform).
    coherence : (float, float)
        Coherence factor ``mu`` (uniform); 1 is fully coherent.
    efficiency : float
        Detector efficiency ``eta`` (quantum efficiency).
    jitter_px : float
        Maximum positional jitter per axis, object pixels (uniform in ``[-j, j]``).
    amplitude_range, phase_range : (float, float)
        Object transmission at image value 0 and 1 (phase in radians), as the simulator's.
    single_material : bool
        Amplitude and phase from ONE image (a specimen of one material, where thickness
        sets both: ``amplitude_range = (1, 0.8)`` makes thicker parts darker); otherwise
        from independent drawings. A frame cannot see a constant phase, but for one
        material the amplitude it does see fixes the phase, so targets keep their absolute
        phase (zero thickness, zero phase) instead of :func:`reference_phase`.
    """

    dose: tuple[float, float] = (1e4, 1e6)
    readout_sigma: tuple[float, float] = (0.0, 1.0)
    coherence: tuple[float, float] = (0.9, 1.0)
    efficiency: float = 1.0
    jitter_px: float = 1.0
    amplitude_range: tuple[float, float] = (0.8, 1.0)
    phase_range: tuple[float, float] = (0.0, math.pi / 2)
    single_material: bool = False


def normalize_frames(frames, flux) -> torch.Tensor:
    """Network input ``log(1 + I F_ref / flux) / log(1 + F_ref)``, float32 ``(n, 1, N, N)``.

    Parameters
    ----------
    frames : ``(n, N, N)`` counts (array or tensor; negative readout values clip to 0)
    flux : float or ``(n,)`` array
        Photons per frame carried by the probe, ``sum |P|^2``.
    """
    x = frames if torch.is_tensor(frames) else torch.from_numpy(np.asarray(frames))
    scale = torch.as_tensor(REFERENCE_FLUX / np.asarray(flux, np.float64), dtype=torch.float32)
    x = x.to(torch.float32).clamp_min(0) * scale.reshape(-1, 1, 1)
    return (torch.log1p(x) / math.log1p(REFERENCE_FLUX))[:, None]


def measure(probe: torch.Tensor, patches: torch.Tensor, gen: torch.Generator, noise: NoiseModel,
            dose: torch.Tensor) -> torch.Tensor:
    """Noisy frames ``(n, N, N)`` of object ``patches`` (at the true windows) under ``probe``.

    ``probe`` has unit power (``sum |P|^2 = 1``); frame ``i`` carries ``dose[i]`` photons.
    """
    n = patches.shape[0]
    u = torch.rand((n, 2), generator=gen, dtype=torch.float64)
    mu = noise.coherence[0] + (noise.coherence[1] - noise.coherence[0]) * u[:, 0]
    sig = noise.readout_sigma[0] + (noise.readout_sigma[1] - noise.readout_sigma[0]) * u[:, 1]
    mu = mu.to(torch.float32)[:, None, None]
    mean = patches.mean(dim=(-2, -1), keepdim=True)
    psi = probe * (mu * patches + (1 - mu) * mean)
    expected = noise.efficiency * dose.to(torch.float32)[:, None, None] * fft2c(psi).abs() ** 2
    counts = torch.poisson(expected.to(torch.float64), generator=gen).to(torch.float32)
    read = torch.randn(counts.shape, generator=gen) * sig.to(torch.float32)[:, None, None]
    return counts + read


@dataclass
class StreamConfig:
    """Settings of :class:`SingleShotStream` (all seeded by ``seed``)."""

    batch: int = 32
    canvas: int = 160
    pool: int = 6
    refresh: int = 4
    kinds: tuple[str, ...] = TRAIN_KINDS
    seed: int = 0
    geometry: Geometry = field(default_factory=Geometry)
    noise: NoiseModel = field(default_factory=NoiseModel)

    def to_dict(self) -> dict:
        return asdict(self)


class SingleShotStream:
    """Seeded stream of ``(input, amplitude, phase)`` training batches.

    ``sample()`` returns float32 tensors ``x`` ``(B, 1, N, N)`` (:func:`normalize_frames`),
    ``amp`` and ``phase`` ``(B, M, M)``: the object's amplitude and phase (radians) on the
    central ``M x M`` part of the nominal window, the phase referenced to the patch's
    probe-weighted mean (:func:`reference_phase`; absolute for ``single_material``).
    """

    def __init__(self, config: StreamConfig | None = None):
        self.cfg = cfg = config or StreamConfig()
        self.rng = np.random.default_rng([cfg.seed, 17])
        self.gen = torch.Generator().manual_seed(int(cfg.seed))
        p = torch.from_numpy(zone_plate(cfg.geometry, 1.0))
        self.probe = p
        self.canvases = [self._canvas() for _ in range(cfg.pool)]
        self.n_batches = 0

    def _image(self) -> np.ndarray:
        from ptytasks.simulate.objects import image

        kind = str(self.rng.choice(self.cfg.kinds))
        c = self.cfg.canvas
        img = image(kind, (c, c), seed=int(self.rng.integers(2**31)))
        k = int(self.rng.integers(4))  # random quarter turn and flip: more variety
        img = np.rot90(img, k)
        return np.ascontiguousarray(img[:, ::-1] if self.rng.random() < 0.5 else img)

    def _canvas(self) -> torch.Tensor:
        nz = self.cfg.noise
        a0, a1 = nz.amplitude_range
        p0, p1 = nz.phase_range
        t = self._image()  # drawn first: the seeded order of the independent case
        amp = a0 + (a1 - a0) * t
        phase = p0 + (p1 - p0) * (t if nz.single_material else self._image())
        return torch.from_numpy((amp * np.exp(1j * phase)).astype(np.complex64))

    def sample(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cfg, geo, nz = self.cfg, self.cfg.geometry, self.cfg.noise
        if self.n_batches and cfg.refresh and self.n_batches % cfg.refresh == 0:
            self.canvases[int(self.rng.integers(cfg.pool))] = self._canvas()
        self.n_batches += 1
        n, b = geo.frame_size, cfg.batch
        j = float(nz.jitter_px)
        lo, hi = math.ceil(j) + 1, cfg.canvas - n - math.ceil(j) - 1
        which = self.rng.integers(cfg.pool, size=b)
        corners = self.rng.integers(lo, hi, size=(b, 2)).astype(np.float64)
        jit = self.rng.uniform(-j, j, size=(b, 2)) if j > 0 else np.zeros((b, 2))
        d0, d1 = nz.dose
        dose = np.exp(self.rng.uniform(math.log(d0), math.log(d1), size=b))
        true_p, target = [], []
        for i in range(b):
            obj = self.canvases[int(which[i])]
            pos = torch.from_numpy(corners[i:i + 1] + jit[i:i + 1])
            true_p.append(extract_patches(obj, pos, (n, n), subpixel=True)[0])
            y, x = int(corners[i, 0]), int(corners[i, 1])
            target.append(obj[y:y + n, x:x + n][geo.crop, geo.crop])
        frames = measure(self.probe, torch.stack(true_p), self.gen, nz, torch.from_numpy(dose))
        x = normalize_frames(frames, dose)
        tgt = torch.stack(target)
        if not nz.single_material:  # one material: the amplitude fixes the absolute phase
            tgt = reference_phase(tgt, self.probe[geo.crop, geo.crop], nz)
        return x, tgt.abs(), torch.angle(tgt)


def reference_phase(patches: torch.Tensor, probe_crop: torch.Tensor, noise: NoiseModel
                    ) -> torch.Tensor:
    """Patches with their unobservable constant phase replaced by the training mid-range.

    A frame is blind to a constant phase of its patch (``|F{P O e^{ic}}| = |F{P O}|``), so
    the target's ``|P|^2``-weighted mean phasor is rotated to ``exp(i (p0 + p1) / 2)``;
    stitching (:mod:`ptytasks.engines.learned`) re-aligns neighbouring patches' phases.
    """
    w = probe_crop.abs() ** 2
    m = (patches * w).sum(dim=(-2, -1), keepdim=True)
    mid = 0.5 * (noise.phase_range[0] + noise.phase_range[1])
    rot = torch.exp(1j * (mid - torch.angle(m))).to(patches.dtype)
    return patches * rot


def held_out_batch(n: int, geometry: Geometry | None = None, noise: NoiseModel | None = None,
                   seed: int = 1_000_003, kinds: tuple[str, ...] = ("dead_leaves",),
                   canvas: int = 160) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A fixed validation set of ``n`` samples from canvases with seeds never used in training.

    Training canvases draw seeds from ``default_rng([seed, 17])``; this set uses
    ``seed`` offset by a large prime and its own canvases, so objects do not repeat.
    """
    cfg = StreamConfig(batch=n, canvas=canvas, pool=4, refresh=0, kinds=kinds, seed=seed,
                       geometry=geometry or Geometry(), noise=noise or NoiseModel())  # fmt: skip
    return SingleShotStream(cfg).sample()
