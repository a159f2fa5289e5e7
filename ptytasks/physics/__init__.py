"""Differentiable ptychographic physics: propagators, shifts, probes, Zernike, forward models."""
