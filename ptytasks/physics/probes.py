"""Model illuminations (probes) for simulation and initialisation.

All probes are complex tensors ``(ny, nx)`` centred at pixel ``(ny//2, nx//2)`` (the
centred-FFT origin), normalised to unit total intensity ``sum |P|^2 = 1`` (scale by the dose
in the simulator). ``dtype`` is ``complex64`` by default, ``complex128`` on request.
Propagation signs follow ``docs/conventions.md``: a probe at ``defocus = dz`` equals the
focused probe propagated by ``+dz`` (downstream) with
:func:`ptytasks.physics.propagators.propagate`.
"""

from __future__ import annotations

import math

import torch

from ptytasks.physics.fft import fft2u, freq_grid, ifft2c, ifft2u
from ptytasks.physics.propagators import angular_spectrum_tf
from ptytasks.physics.zernike import zernike

# CODATA 2018 constants (SI).
_H = 6.62607015e-34  # Planck constant, J s
_ME = 9.1093837015e-31  # electron rest mass, kg
_E = 1.602176634e-19  # elementary charge, C
_C = 299792458.0  # speed of light, m/s


def electron_wavelength(voltage: float) -> float:
    """Relativistic electron wavelength, metres, for an accelerating ``voltage`` in volts.

    ``lambda = h / sqrt(2 m0 e V (1 + e V / (2 m0 c^2)))``; 300 kV -> 1.9687 pm.
    """
    if voltage <= 0:
        raise ValueError(f"accelerating voltage must be positive volts; got {voltage}")
    ev = _E * voltage
    return _H / math.sqrt(2 * _ME * ev * (1 + ev / (2 * _ME * _C**2)))


def electron_voltage(wavelength: float) -> float:
    """The accelerating voltage (V) of electrons of ``wavelength`` (m): the inverse of
    :func:`electron_wavelength`, ``e V = sqrt((m0 c^2)^2 + (h c / lambda)^2) - m0 c^2``."""
    if wavelength <= 0:
        raise ValueError(f"wavelength must be positive metres; got {wavelength}")
    rest = _ME * _C**2
    return (math.hypot(rest, _H * _C / wavelength) - rest) / _E


def _normalise(p: torch.Tensor) -> torch.Tensor:
    return p / torch.sqrt((p.real**2 + p.imag**2).sum())


def _radius_grid(shape, pixel_size, rdt, device=None) -> torch.Tensor:
    ny, nx = shape
    y = (torch.arange(ny, dtype=rdt, device=device) - ny // 2) * pixel_size
    x = (torch.arange(nx, dtype=rdt, device=device) - nx // 2) * pixel_size
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    return yy * yy + xx * xx


def electron_probe(
    shape: tuple[int, int],
    pixel_size: float,
    voltage: float,
    convergence_semiangle: float,
    defocus: float = 0.0,
    aberrations: dict[str, float] | None = None,
    *,
    dtype: torch.dtype = torch.complex64,
) -> torch.Tensor:
    """Convergent-beam (STEM) electron probe.

    ``P = ifft2c(A(k) exp(-i chi(k) + i sum_j c_j Z_j(k / k_max)))`` with the aperture
    ``A = [lambda |k| <= alpha]`` and the aberration function
    ``chi = pi lambda defocus k^2 + (pi/2) Cs lambda^3 k^4 + (pi/3) C5 lambda^5 k^6``
    (the electron-optics sign); the Zernike coefficients ``c_j`` are radians of pupil phase,
    as everywhere in ptyflow (docs/conventions.md; until 2026-12-07 they entered ``chi``, the
    opposite sign), rolled so the crossover sits at the window centre, pixel
    ``(N//2, N//2)``, as every probe of this module does (before 2026-12-07 it sat at pixel
    ``(0, 0)``, split over the window's four corners).

    Parameters
    ----------
    shape : (ny, nx)
    pixel_size : float
        Real-space pitch, metres.
    voltage : float
        Accelerating voltage, volts.
    convergence_semiangle : float
        Aperture semi-angle ``alpha``, radians.
    defocus : float
        Metres; ``> 0`` puts the specimen ``defocus`` downstream of the crossover (the
        focused probe propagated by ``+defocus``, Fresnel approximation).
    aberrations : dict
        ``"Cs"`` and ``"C5"`` in metres; ``"Z<j>"`` (e.g. ``"Z5"``) Noll Zernike coefficients in
        radians of pupil phase over the aperture (:mod:`ptytasks.physics.zernike`).
    """
    lam = electron_wavelength(voltage)
    fy, fx = freq_grid(shape, pixel_size, centered=True, dtype=torch.float64)
    k2 = fy * fy + fx * fx
    kmax = convergence_semiangle / lam
    if kmax * pixel_size > 0.5:  # beyond it the square grid clips the round aperture
        raise ValueError(
            f"aperture {kmax:.3g} 1/m exceeds the grid's Nyquist frequency "
            f"{0.5 / pixel_size:.3g} 1/m; use a smaller pixel_size"
        )
    chi = math.pi * lam * defocus * k2
    ab = dict(aberrations or {})
    chi = chi + 0.5 * math.pi * ab.pop("Cs", 0.0) * lam**3 * k2 * k2
    chi = chi + math.pi / 3 * ab.pop("C5", 0.0) * lam**5 * k2**3
    zterms = {}
    for key in list(ab):
        if key.startswith("Z") and key[1:].isdigit():
            zterms[int(key[1:])] = ab.pop(key)
    if ab:
        raise ValueError(f"unknown aberration keys {sorted(ab)}; use 'Cs', 'C5', 'Z<noll>'")
    if zterms:
        rho, theta = torch.sqrt(k2) / kmax, torch.atan2(fy, fx)
        for j, c in zterms.items():
            chi = chi - c * zernike(j, rho, theta)  # pupil phase +c Z_j
    aperture = (k2 <= kmax * kmax).to(torch.float64)
    spec = aperture * torch.polar(torch.ones_like(chi), -chi)
    # ifft2c leaves the real-space origin at pixel (0, 0) (docs/conventions.md): roll the
    # crossover to the window centre (N//2, N//2), where every other probe sits.
    return _normalise(torch.fft.fftshift(ifft2c(spec), dim=(-2, -1))).to(dtype)


def zone_plate_focal_length(diameter: float, outer_zone_width: float, wavelength: float) -> float:
    """Fresnel zone plate focal length ``f = D dr / lambda`` (metres)."""
    return diameter * outer_zone_width / wavelength


def zone_plate_probe(
    shape: tuple[int, int],
    pixel_size: float,
    wavelength: float,
    diameter: float,
    outer_zone_width: float,
    defocus: float = 0.0,
    central_stop: float = 0.0,
    *,
    dtype: torch.dtype = torch.complex64,
) -> torch.Tensor:
    """X-ray Fresnel-zone-plate (FZP) probe at ``defocus`` from the first-order focus.

    The focus is the Fourier transform of the FZP pupil: an annulus in spatial frequency
    from ``central_stop * k_max`` to ``k_max = D / (2 lambda f) = 1 / (2 dr)`` (NA
    ``lambda / (2 dr)``), with ``f = D dr / lambda``. It is propagated (angular spectrum) by
    ``defocus``; ``> 0`` is downstream of the focus. The geometric footprint there is a ring
    of outer diameter ``D |defocus| / f``.

    Parameters
    ----------
    shape : (ny, nx)
    pixel_size : float
        Sample-plane pitch, metres (must resolve ``dr``: ``pixel_size <= dr``).
    wavelength, diameter, outer_zone_width, defocus : float
        Metres.
    central_stop : float
        Diameter of the central stop as a fraction of ``diameter`` (0 = none).
    """
    if pixel_size > outer_zone_width:
        raise ValueError(
            f"pixel_size {pixel_size:.3g} m cannot sample the zone plate NA: it must not exceed "
            f"the outer zone width {outer_zone_width:.3g} m"
        )
    if not 0 <= central_stop < 1:
        raise ValueError(f"central_stop is a diameter fraction in [0, 1); got {central_stop}")
    fy, fx = freq_grid(shape, pixel_size, dtype=torch.float64)
    k = torch.sqrt(fy * fy + fx * fx)
    kmax = 1.0 / (2 * outer_zone_width)
    pupil = ((k <= kmax) & (k >= central_stop * kmax)).to(torch.complex128)
    h = angular_spectrum_tf(shape, pixel_size, wavelength, defocus, dtype=torch.complex128)
    p = torch.fft.fftshift(ifft2u(pupil * h), dim=(-2, -1))  # focus at (N//2, N//2)
    return _normalise(p).to(dtype)


def gaussian_probe(
    shape: tuple[int, int],
    pixel_size: float,
    waist: float,
    wavelength: float | None = None,
    defocus: float = 0.0,
    *,
    dtype: torch.dtype = torch.complex64,
) -> torch.Tensor:
    """Gaussian beam: field ``exp(-r^2 / waist^2)`` at the waist (intensity ``1/e^2`` radius
    ``waist``), propagated (angular spectrum) by ``defocus`` metres if nonzero.

    ``wavelength`` (metres) is needed only for ``defocus != 0``.
    """
    r2 = _radius_grid(shape, pixel_size, torch.float64)
    p = torch.exp(-r2 / waist**2).to(torch.complex128)
    if defocus:
        if wavelength is None:
            raise ValueError("gaussian_probe needs a wavelength to apply a defocus")
        h = angular_spectrum_tf(shape, pixel_size, wavelength, defocus, dtype=torch.complex128)
        p = ifft2u(fft2u(p) * h)
    return _normalise(p).to(dtype)


def diffuser_probe(
    shape: tuple[int, int],
    pixel_size: float,
    wavelength: float,
    distance: float,
    seed: int = 0,
    feature_size: float | None = None,
    *,
    phase_range: float = math.pi,
    amplitude_contrast: float = 0.3,
    dtype: torch.dtype = torch.complex64,
) -> torch.Tensor:
    """Structured illumination from a random diffuser propagated by ``distance``.

    A plane wave passes a thin random screen ``a(r) exp(i phi(r))`` with correlation length
    ``feature_size`` (metres; default 4 pixels), ``phi`` of standard deviation
    ``phase_range / 2`` and ``a = 1 + amplitude_contrast * noise`` (clipped at 0); the wave
    is propagated (angular spectrum, periodic) by ``distance`` metres. Deterministic for a
    given ``seed``.
    """
    g = torch.Generator().manual_seed(int(seed))
    feat = 4 * pixel_size if feature_size is None else feature_size
    fy, fx = freq_grid(shape, pixel_size, dtype=torch.float64)
    # Gaussian low-pass whose real-space sigma is the feature size.
    lp = torch.exp(-2 * (math.pi * feat) ** 2 * (fy * fy + fx * fx))

    def smooth_noise() -> torch.Tensor:
        n = torch.randn(shape, generator=g, dtype=torch.float64)
        s = torch.fft.ifft2(torch.fft.fft2(n) * lp).real
        return (s - s.mean()) / s.std()

    phi = 0.5 * phase_range * smooth_noise()
    amp = torch.clamp(1 + amplitude_contrast * smooth_noise(), min=0)
    screen = torch.polar(amp, phi)
    h = angular_spectrum_tf(shape, pixel_size, wavelength, distance, dtype=torch.complex128)
    return _normalise(ifft2u(fft2u(screen) * h)).to(dtype)
