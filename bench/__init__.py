"""Benchmarks of ptyflow; each writes JSON with machine info to ``bench/results/``."""
