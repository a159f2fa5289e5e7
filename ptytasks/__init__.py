"""ptytasks: the science of ptyflow (physics, fields, engines, metrics, simulators).

Plain Python and PyTorch; importable without Prefect. Conventions: ``docs/conventions.md``.
"""

__version__ = "0.1.0"
