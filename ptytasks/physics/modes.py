"""Mixed-state (partially coherent) probes: several mutually incoherent modes.

A partially coherent illumination is a mixed state: its mutual intensity is a sum of
mutually incoherent, orthogonal modes ``P_k``, and a detector records the incoherent sum
``I = sum_k |F[P_k O]|^2`` (Thibault and Menzel 2013, Nature 494, 68). The forward models
take a probe of shape ``(K, ny, nx)`` for this (:func:`ptytasks.physics.models.base.illuminate`);
this module holds what is specific to the modes themselves:

* :func:`orthogonalize_modes` -- the modes that diagonalise the mixed state (the intensity
  and the predicted frames are unchanged; the modes become orthogonal, sorted by power);
* :func:`power_fractions` -- each mode's share of the total power;
* :func:`add_modes` -- a start with more modes than a single-mode guess provides (the
  probe's derivatives: the modes a small jitter creates);
* :func:`partially_coherent_modes` -- a physical mixed state for simulations: the coherent
  probe seen from an extended source (random lateral displacements), decomposed into its
  eigenmodes with chosen power fractions.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ptytasks.physics.shifts import fourier_shift


def _as_modes(probe: torch.Tensor) -> torch.Tensor:
    if probe.dim() == 2:
        return probe[None]
    if probe.dim() != 3:
        raise ValueError(f"probe must be (ny, nx) or (modes, ny, nx); got {tuple(probe.shape)}")
    return probe


def power_fractions(probe: torch.Tensor) -> torch.Tensor:
    """Share of the total power ``sum |P_k|^2`` carried by each mode, real ``(K,)``.

    Meaningful for orthogonal modes (:func:`orthogonalize_modes`): then the shares are the
    eigenvalues of the normalised mixed state.
    """
    p = _as_modes(probe)
    power = (p.real**2 + p.imag**2).sum((-2, -1))
    return power / power.sum().clamp_min(torch.finfo(power.dtype).tiny)


def orthogonalize_modes(probe: torch.Tensor) -> torch.Tensor:
    """The orthogonal modes of the same mixed state, strongest first.

    With the modes as rows of ``A`` (``K x ny nx``), ``A = U S V^H`` gives the modes
    ``S V^H = U^H A``: a unitary mixing of the modes, so the mutual intensity
    ``A^H A`` -- and every predicted intensity -- is unchanged, while the new modes are
    mutually orthogonal with powers ``S^2`` in decreasing order. A single mode is returned
    as given.

    Parameters
    ----------
    probe : complex ``(K, ny, nx)`` (or ``(ny, nx)``)

    Returns
    -------
    complex tensor of the input's shape.
    """
    p = _as_modes(probe)
    if p.shape[0] == 1:
        return probe
    a = p.reshape(p.shape[0], -1)
    # The K x K Gram matrix is tiny; its eigenvectors give U without an SVD of A.
    gram = a @ a.conj().T
    evals, u = torch.linalg.eigh(gram.to(torch.complex128))
    u = u[:, torch.argsort(evals, descending=True)].to(a.dtype)
    return (u.conj().T @ a).reshape(p.shape)


def add_modes(probe: torch.Tensor, n_modes: int, fraction: float = 0.05) -> torch.Tensor:
    """Extend a probe to ``n_modes`` orthogonal modes for a mixed-state start.

    The extra modes are the strongest mode's spatial derivatives (``dP/dy``, ``dP/dx``,
    then ``d2P/dy dx``, ``d2P/dy2 - d2P/dx2``, ...), Gram-Schmidt orthogonalised: the first
    modes a small lateral jitter of the probe creates (an extended source, vibrations:
    ``P(r - s) ~ P - s . grad P``); each new mode takes ``fraction`` of the total power and
    the existing modes keep the rest, so the predicted counts are unchanged.

    Parameters
    ----------
    probe : complex ``(ny, nx)`` or ``(K0, ny, nx)``
    n_modes : int
        Modes wanted (``>= 1``); ``n_modes <= K0`` returns the probe as modes unchanged.
    fraction : float
        Power share given to each added mode (0 < fraction, total below 1).

    Returns
    -------
    complex ``(n_modes, ny, nx)``.
    """
    if int(n_modes) < 1:
        raise ValueError(f"probe_modes must be >= 1; got {n_modes}")
    p = _as_modes(probe)
    k0, (ny, nx) = p.shape[0], p.shape[-2:]
    if n_modes <= k0:
        return p
    extra = n_modes - k0
    if not (fraction > 0 and extra * fraction < 1):
        raise ValueError(f"fraction {fraction} per added mode must be > 0 and leave power "
                         f"for the existing modes ({extra} added)")  # fmt: skip
    total = float((p.real**2 + p.imag**2).sum())
    rdt = p.real.dtype
    fy = torch.fft.fftfreq(ny, dtype=rdt, device=p.device)[:, None]
    fx = torch.fft.fftfreq(nx, dtype=rdt, device=p.device)[None, :]
    spec = torch.fft.fft2(p[0])
    # Derivative filters (2 pi i f)^n, lowest order first.
    dy, dx = 2j * math.pi * fy, 2j * math.pi * fx
    filters = [dy, dx, dy * dx, dy * dy - dx * dx, dy * dy + dx * dx, dy**3, dx**3]
    # an orthonormal basis of the given modes' span (they need not be orthogonal to each
    # other: projecting on each in turn left overlap), then of the added ones
    basis = list(torch.linalg.qr(p.reshape(k0, -1).T).Q.T)
    new = []
    for filt in filters:
        if len(new) == extra:
            break
        m = torch.fft.ifft2(spec * filt.to(p.dtype)).reshape(-1)
        for b in basis:
            m = m - torch.vdot(b, m) * b
        norm = float(torch.linalg.vector_norm(m))
        if norm > 1e-6 * math.sqrt(total):
            basis.append(m / norm)
            new.append((m / norm).reshape(ny, nx))
    if len(new) < extra:
        raise ValueError(f"cannot make {extra} more modes from a {tuple(p.shape)} probe")
    kept = p * math.sqrt(1 - extra * fraction)
    added = [m * math.sqrt(fraction * total) for m in new]
    return torch.cat([kept, torch.stack(added)])


def partially_coherent_modes(
    probe, fractions, *, spread_px: float = 1.5, n_samples: int = 64, seed: int = 0
) -> np.ndarray:
    """A mixed-state probe with given power fractions, from a coherent probe.

    An extended source illuminates the specimen with laterally displaced copies of the
    coherent probe (displacements Gaussian with RMS ``spread_px`` per axis); the
    eigenmodes of that ensemble's mutual intensity are the physical modes. The strongest
    ``len(fractions)`` of them are kept and rescaled to carry ``fractions`` of the
    coherent probe's power (so the counts per frame stay as set by the dose).

    Parameters
    ----------
    probe : complex array ``(ny, nx)``
        Coherent probe.
    fractions : sequence of float
        Power share of each mode, summing to 1 (e.g. ``(0.6, 0.3, 0.1)``).
    spread_px : float
        RMS source displacement per axis, object pixels.
    n_samples : int
        Displaced copies in the ensemble.
    seed : int

    Returns
    -------
    complex64 ``(K, ny, nx)``, orthogonal modes, strongest first.
    """
    f = np.asarray(fractions, dtype=np.float64)
    if f.ndim != 1 or len(f) < 1 or np.any(f <= 0) or abs(f.sum() - 1) > 1e-6:
        raise ValueError(f"mode fractions must be positive and sum to 1; got {fractions}")
    p = torch.as_tensor(np.asarray(probe)).to(torch.complex128)
    if p.dim() != 2:
        raise ValueError(f"probe must be (ny, nx); got {tuple(p.shape)}")
    if len(f) == 1:
        return p[None].numpy().astype(np.complex64)
    rng = np.random.default_rng(seed)
    shifts = torch.as_tensor(rng.normal(0.0, spread_px, (n_samples, 2)))
    copies = fourier_shift(p.expand(n_samples, -1, -1), shifts)
    modes = orthogonalize_modes(copies)[: len(f)]
    total = float((p.real**2 + p.imag**2).sum())
    norms = torch.linalg.vector_norm(modes.reshape(len(f), -1), dim=1)
    modes = modes / norms[:, None, None] * torch.as_tensor(np.sqrt(f * total))[:, None, None]
    return modes.numpy().astype(np.complex64)
