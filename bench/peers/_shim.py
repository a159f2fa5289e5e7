"""Import-time workarounds for the peer packages, applied only inside a peer's own process.

* ``torchvision``: pty-chi and PtyRAD import it for one pure-torch function, the Gaussian
  blur (``transforms.GaussianBlur``, ``transforms.functional.gaussian_blur``). PyPI's
  torchvision wheel either drags in a CUDA torch (unpinned) or, beside the CPU torch, fails
  to import its compiled part ("operator torchvision::nms does not exist"). The shim puts
  a stub ``torchvision`` package into ``sys.modules`` whose blur is implemented here in
  torch (same separable Gaussian kernel and reflect padding as torchvision's tensor path).
  A working real torchvision is used instead when it imports cleanly.
* ``ptyrad/plotting/basic.py`` (PtyRAD 1.0.0) contains an f-string that only Python >= 3.12
  parses (``f'{d['k']}'``). A meta-path finder loads that one module from its source with
  the nested quotes rewritten; if the rewrite still does not compile, a stub module whose
  functions do nothing is used (the benchmark never plots through PtyRAD).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import re
import sys
import types

import torch

__all__ = ["gaussian_blur", "install", "install_ptyrad_fix", "install_torchvision_shim"]


def _kernel1d(ksize: int, sigma: float, dtype, device) -> torch.Tensor:
    half = (ksize - 1) * 0.5
    x = torch.linspace(-half, half, steps=ksize, dtype=dtype, device=device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(img: torch.Tensor, kernel_size, sigma=None) -> torch.Tensor:
    """torchvision's ``gaussian_blur`` on tensors ``(..., H, W)`` (real or complex)."""
    if isinstance(kernel_size, int):
        kernel_size = [kernel_size, kernel_size]
    kernel_size = [int(k) for k in kernel_size]
    if sigma is None:
        sigma = [k * 0.15 + 0.35 for k in kernel_size]
    elif isinstance(sigma, (int, float)):
        sigma = [float(sigma), float(sigma)]
    else:
        sigma = [float(s) for s in sigma]
        if len(sigma) == 1:
            sigma = sigma * 2
    if torch.is_complex(img):
        return torch.complex(
            gaussian_blur(img.real, kernel_size, sigma), gaussian_blur(img.imag, kernel_size, sigma)
        )
    dtype = img.dtype if img.is_floating_point() else torch.float32
    kx = _kernel1d(kernel_size[0], sigma[0], dtype, img.device)
    ky = _kernel1d(kernel_size[1], sigma[1], dtype, img.device)
    kernel = ky[:, None] * kx[None, :]
    shape = img.shape
    x = img.reshape(-1, 1, shape[-2], shape[-1]).to(dtype)
    pad = [kernel_size[0] // 2, kernel_size[0] // 2, kernel_size[1] // 2, kernel_size[1] // 2]
    x = torch.nn.functional.pad(x, pad, mode="reflect")
    x = torch.nn.functional.conv2d(x, kernel[None, None])
    return x.reshape(shape).to(img.dtype if img.is_floating_point() else dtype)


class GaussianBlur(torch.nn.Module):
    """``torchvision.transforms.GaussianBlur`` with a fixed sigma (or the mean of a range)."""

    def __init__(self, kernel_size, sigma=(0.1, 2.0)):
        super().__init__()
        self.kernel_size = kernel_size
        if isinstance(sigma, (int, float)):
            sigma = (float(sigma), float(sigma))
        self.sigma = tuple(float(s) for s in sigma)

    def forward(self, img):
        s = self.sigma[0] if self.sigma[0] == self.sigma[1] else 0.5 * sum(self.sigma)
        return gaussian_blur(img, self.kernel_size, [s, s])


def _real_torchvision_works() -> bool:
    if "torchvision" in sys.modules:
        return not getattr(sys.modules["torchvision"], "__ptyflow_shim__", False)
    if importlib.util.find_spec("torchvision") is None:
        return False
    try:
        import torchvision.transforms.functional  # noqa: F401

        return True
    except Exception:  # noqa: BLE001 - "operator torchvision::nms does not exist" and kin
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        return False


def install_torchvision_shim(force: bool = False) -> str:
    """Make ``import torchvision.transforms[.functional]`` work; returns "real" or "shim"."""
    if not force and _real_torchvision_works():
        return "real"
    tv = types.ModuleType("torchvision")
    tv.__ptyflow_shim__ = True
    tv.__version__ = "0.0+ptyflow-shim"
    tv.__path__ = []  # a package, so submodule imports resolve through sys.modules
    tr = types.ModuleType("torchvision.transforms")
    tr.__path__ = []
    fn = types.ModuleType("torchvision.transforms.functional")
    fn.gaussian_blur = gaussian_blur
    tr.functional = fn
    tr.GaussianBlur = GaussianBlur
    tv.transforms = tr
    sys.modules.update(
        {"torchvision": tv, "torchvision.transforms": tr, "torchvision.transforms.functional": fn}
    )
    return "shim"


_BROKEN = "ptyrad.plotting.basic"


class _PatchedSource(importlib.abc.Loader):
    def __init__(self, origin: str):
        self.origin = origin

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        with open(self.origin, encoding="utf-8") as fh:
            src = fh.read()
        try:
            code = compile(src, self.origin, "exec")
        except SyntaxError:
            # f'...{x['k']}...' -> f'...{x["k"]}...' (Python < 3.12 rejects reused quotes)
            fixed = re.sub(r"\[\s*'([A-Za-z0-9_]+)'\s*\]", r'["\1"]', src)
            try:
                code = compile(fixed, self.origin, "exec")
            except SyntaxError:
                code = None
        if code is None:
            module.__getattr__ = lambda name: lambda *a, **k: None
            module.__ptyflow_stub__ = True
            return
        module.__ptyflow_patched__ = True
        exec(code, module.__dict__)


class _PtyradFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname != _BROKEN:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or not spec.origin:
            return None
        return importlib.util.spec_from_file_location(
            fullname, spec.origin, loader=_PatchedSource(spec.origin)
        )


def install_ptyrad_fix() -> None:
    """Let ``ptyrad.plotting.basic`` import on Python 3.11 (no-op on 3.12+)."""
    if sys.version_info >= (3, 12):
        return
    if not any(isinstance(f, _PtyradFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _PtyradFinder())


def install() -> dict:
    """Both workarounds; returns what was done (recorded with the results)."""
    tv = install_torchvision_shim()
    install_ptyrad_fix()
    return {"torchvision": tv, "ptyrad_fstring_fix": sys.version_info < (3, 12)}
