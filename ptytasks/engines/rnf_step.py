"""One RNF training step, run eagerly or replayed from a CUDA graph.

On a GPU the RNF step is launch-bound: ~520 small kernels per step on the Siemens star
(3.5 ms of GPU time) took 16 ms of host time to issue (one H200,
``bench/results/records/gpu-h200-*.json``). A CUDA graph records the step's kernels once
and replays them with one launch, so the host no longer sets the pace.

A graph replays exactly what it recorded: the same shapes, the same memory, no host
logic. So it is used only where a step is the same computation every time --

* on CUDA, with ``RNFOptions.cuda_graphs`` on;
* nothing but the fields (and a per-frame background) learned (no positions, geometry,
  intensities: their updates read values on the host), no encoding annealing,
  ``eval_region`` not ``"windows"``;
* for a full batch whose box is the whole object (``object_box``: with random batches on
  a scan that is most steps; Fourier ptychography: every step);

and other steps run eagerly, between replays, on the same parameters and optimiser
state. The learning rates are part of the recording: a change (a decay schedule) records
the step again. The first two graphable steps run eagerly on a side stream (CUDA's
warm-up before a capture); a capture that fails logs one warning and the run goes on
eagerly. Replayed or eager, a step computes the same update (to the order of
floating-point sums chosen by the libraries).
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

_WARMUP_STEPS = 2


def train_step(st, idx, idx_host, data_loss, wavelet, zero_grad: bool = True):
    """One optimiser step on frames ``idx``; returns the detached (data, wavelet) losses.

    ``st``: the run's ``_Setup``; ``wavelet(res)`` the regulariser (or ``None``).
    """
    if zero_grad:
        st.optim.zero_grad(set_to_none=True)
    pred, res = st.predict(idx, idx_host)
    ld = data_loss(pred, st.frames[idx], st.detector_mask)
    lr_ = wavelet(res) if wavelet is not None else torch.zeros((), dtype=ld.dtype,
                                                                device=ld.device)
    (ld + lr_).backward()
    ld, lr_ = ld.detach(), lr_.detach()
    del pred, res  # the graph (the field's saved activations) goes before Adam's buffers
    st.geometry.pull_grad()
    st.optim.step()
    st.geometry.push()
    st.constrain()
    return ld, lr_


def graph_blocker(st, opts) -> str | None:
    """Why the steps of this run cannot be replayed from a CUDA graph (``None``: they can)."""
    if not opts.cuda_graphs:
        return "cuda_graphs is off"
    if st.device.type != "cuda":
        return "not on CUDA"
    # the background's update and its clamp at 0 stay on the device (no host read)
    host = [n for n in st.learned if n != "background_raw"]
    if host:
        return f"learned model parameters {host}"
    if st.affine is not None:  # its write-back to the model's positions reads the host
        return "learned position_affine"
    if st.obj_field.annealed is not None:
        return "annealed encoding"
    if opts.eval_region == "windows":
        return "eval_region 'windows'"
    return None  # scanning runs: positions not learned, so their corners are on the host


class StepGraph:
    """Replays eligible training steps of one run from a CUDA graph (see the module)."""

    def __init__(self, st, opts, data_loss, wavelet):
        self.st, self.bs = st, st.batch  # frames per step, resolved once by the setup
        self.loss, self.wavelet = data_loss, wavelet
        self.blocker = graph_blocker(st, opts)
        self.graph = self.key = self.static_idx = self.out = None
        self.warm = 0
        self.replays = 0

    def info(self) -> dict:
        """Steps replayed, and why none could be (``None``: nothing prevented it)."""
        return {"replays": self.replays, "blocker": self.blocker}

    def _graphable(self, idx, idx_host) -> bool:
        if self.blocker is not None or len(idx) != self.bs:
            return False
        st = self.st
        return st.fourier or st.object_box(idx, idx_host) == (0, 0, *st.data.object_shape)

    def step(self, idx, idx_host):
        """The step's (data, wavelet) losses, or ``None`` when it must run eagerly."""
        if not self._graphable(idx, idx_host):
            return None
        key = tuple((g["lr"], g.get("weight_decay")) for g in self.st.optim.param_groups)
        if self.graph is not None and key == self.key:
            self.static_idx.copy_(idx)
            self.graph.replay()
            self.replays += 1
            return self.out
        if self.warm < _WARMUP_STEPS:  # a real step, on a side stream (CUDA's warm-up)
            self.warm += 1
            side = torch.cuda.Stream(self.st.device)
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                out = train_step(self.st, idx, idx_host, self.loss, self.wavelet)
            torch.cuda.current_stream().wait_stream(side)
            return out
        return self._capture(idx, idx_host, key)

    def _capture(self, idx, idx_host, key):
        st = self.st
        self.graph = None
        static_idx = idx.clone()
        st.optim.zero_grad(set_to_none=True)  # the recorded backward writes fresh grads
        graph = torch.cuda.CUDAGraph()
        try:
            torch.cuda.synchronize(st.device)
            # thread_local: a CUDA call from another thread of the process (a Dask worker
            # running two tasks) neither breaks this capture nor is refused by it
            with torch.cuda.device(st.device), \
                    torch.cuda.graph(graph, capture_error_mode="thread_local"):
                out = train_step(st, static_idx, idx_host, self.loss, self.wavelet,
                                 zero_grad=False)
        except Exception as exc:  # noqa: BLE001 -- any capture failure: run eagerly
            self.blocker = f"capture failed ({type(exc).__name__}: {str(exc)[:200]})"
            log.warning("RNF: CUDA graph %s; the steps run eagerly", self.blocker)
            st.optim.zero_grad(set_to_none=True)
            return None
        self.graph, self.key, self.static_idx, self.out = graph, key, static_idx, out
        graph.replay()  # recording ran nothing: this is the step itself
        self.replays += 1
        return out
