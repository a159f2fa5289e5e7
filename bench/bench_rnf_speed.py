"""RNF speed: field throughput and where an epoch's time goes, beside rPIE and the FFT floor.

Two measurements, all in one process run, so every ratio is back to back on the same
machine state (and recorded with its load average):

* **Field throughput** -- forward + backward of the default :class:`ResidualField`
  (encoding levels, complex width and phasor of ``RNFOptions``) on a full ``N x N``
  pixel grid, in field coordinates per second, with the naive reference (every level
  hashed, per-corner gathers, complex-dtype MLP with ``torch.exp(1j w z)``) measured in
  the same run, the same field with compiled element-wise kernels (``field_compiled``,
  its first call's compile time beside it), plus the bare ``(2C) x (2C+1)`` GEMM rate of
  this machine and the **GEMM floor** (``gemm_floor``): every matrix product the fused
  MLP runs per coordinate, forward and backward, at the field's shapes, chunking and
  precision, and nothing else -- the rate no field of this architecture can beat here.
* **Two workers** -- the same field in two one-thread processes at once (how ptyflow
  uses two cores: one-thread Dask workers), their rates summed (``workers_throughput``),
  with eager and with compiled kernels.
* **Epoch split** -- for each dataset (simulated far field 100 x 64^2; the Siemens star,
  P25 near field and blood-smear FPM when ``../shared/data`` or ``$PTYFLOW_DATA`` has
  them): the real RNF epoch (``reconstruct_rnf``'s own timer, first epoch dropped; the
  kernels a full run of ``epochs`` would pick; for a run long enough to compile, the same
  epochs with the other kernels right after, ``rnf_epoch_eager_s`` or
  ``rnf_epoch_compiled_s``, so the CPU rule of ``compile_pays`` stays measured), the
  same steps replayed stage by stage with detached boundaries so each stage is timed
  alone (``encoding``, ``mlp_forward``, ``mlp_backward``, ``forward_model`` forward and
  backward, ``loss`` (data term + wavelet) forward and backward, ``optimiser``; the rest
  of the real epoch is ``python_overhead``), ptyflow's rPIE epoch on the same data and
  the batched FFT floor (``fft2 + ifft2`` of all frames).

Usage::

    python bench/bench_rnf_speed.py                    # 1 and 2 threads, all datasets
    python bench/bench_rnf_speed.py --quick            # simulated set only, 1 thread
    python bench/bench_rnf_speed.py --settings '{"hidden_features": 64}'

Writes ``bench/results/rnf-speed-<device>[-quick].json`` (git commit and dirty flag,
machine, load, settings, seeds).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._machine import machine_info  # noqa: E402
from bench.bench_fields import sync  # noqa: E402
from ptytasks.engines.batching import batches  # noqa: E402
from ptytasks.engines.losses import data_loss as make_data_loss  # noqa: E402
from ptytasks.engines.losses import wavelet_sparsity  # noqa: E402
from ptytasks.engines.rnf import RNFOptions, _resolve, _Setup, reconstruct_rnf  # noqa: E402
from ptytasks.fields import ResidualField  # noqa: E402
from ptytasks.fields.activations import from_split  # noqa: E402
from ptytasks.fields.hash_encoding import pixel_to_unit  # noqa: E402
from ptytasks.modalities import modality_of  # noqa: E402
from ptytasks.physics.models.base import illuminate  # noqa: E402
from ptytasks.physics.shifts import extract_patches  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
STAGES = ("encoding", "mlp_forward", "mlp_backward", "forward_model", "loss", "optimiser")


class _Clock:
    """Accumulates wall seconds per stage (device synchronised at each boundary)."""

    def __init__(self, device):
        self.device, self.t = torch.device(device), dict.fromkeys(STAGES, 0.0)

    def __call__(self, stage, fn, *args):
        sync(self.device)
        t0 = time.perf_counter()
        out = fn(*args)
        sync(self.device)
        self.t[stage] += time.perf_counter() - t0
        return out


# ---------------------------------------------------------------------------- throughput
def _mlp_settings(opts: RNFOptions) -> dict:
    """The field MLP's settings of ``opts`` (as the engine builds them), precision aside."""
    return {"hidden_features": opts.hidden_features, "hidden_layers": opts.hidden_layers,
            "first_omega": opts.omega, "hidden_omega": opts.hidden_omega}


def _grid_field(n: int, opts: RNFOptions, precision: str, dev,
                kernels: str = "eager") -> ResidualField:
    """The default field on an ``n x n`` grid (unit prior) with this hidden precision and
    these element-wise kernels (``"eager"`` / ``"compiled"``)."""
    prior = torch.ones(n, n, dtype=torch.complex64, device=dev)
    mlp = {**_mlp_settings(opts), "hidden_precision": precision, "kernels": kernels}
    return ResidualField((n, n), prior, encoding=dict(opts.encoding), mlp=mlp).to(dev)


def _forward_backward(field: ResidualField) -> None:
    """One forward + backward pass over the whole grid (the throughput unit)."""
    z = field()
    (z.real.square() + z.imag.square()).sum().backward()


def _gemm_floor(field: ResidualField, p: int, dev):
    """The matrix products of one forward + backward of ``field``'s fused phasor MLP over
    ``p`` points, alone: per chunk, each layer's forward product and weight gradient, and
    every layer's input gradient but the output layer's (a ``K = 2`` product the fused
    backward forms by broadcasting), in the precision the field runs them (the
    hidden-to-hidden layers in bfloat16 where ``hidden_precision`` resolves to it)."""
    from ptytasks.fields.fused_mlp import native_bfloat16

    cfg, chunk = field.mlp.config, field._chunk() or p
    low = cfg.hidden_precision == "bfloat16" or (cfg.hidden_precision == "auto"
                                                 and native_bfloat16(dev))
    c2 = 2 * cfg.hidden_features
    shapes = [(c2, field.mlp.in_features)] + [(c2, c2)] * cfg.hidden_layers + [(2, c2)]
    mats = []
    for i, (o, k) in enumerate(shapes):
        dt = torch.bfloat16 if low and 0 < i < len(shapes) - 1 else torch.float32
        mats.append((torch.randn(o, k + 1, device=dev).to(dt),  # weights, bias column
                     torch.randn(k + 1, chunk, device=dev).to(dt),  # augmented input
                     torch.randn(o, chunk, device=dev).to(dt)))  # output gradient
    n_chunks = -(-p // chunk)

    def run():
        for _ in range(n_chunks):
            for i, (w, x, g) in enumerate(mats):
                torch.mm(w, x)
                torch.mm(g, x.T)
                if i < len(mats) - 1:
                    torch.mm(w[:, :-1].T, g)

    return run


def field_throughput(n: int, opts: RNFOptions, device: str, reps: int = 5,
                     compiled: bool = True) -> dict:
    """Forward + backward coordinates/s of the default field, the naive reference, the
    machine's GEMM rate at the hidden layer's shape and (``compiled``) the field with
    compiled element-wise kernels."""
    from bench.bench_fields import ComplexDtypeMLP, NaiveHashEncoding, measure_interleaved
    from ptytasks.fields import HashEncodingConfig

    dev = torch.device(device)
    mlp = _mlp_settings(opts)
    field = _grid_field(n, opts, opts.hidden_precision, dev)
    f32 = _grid_field(n, opts, "float32", dev)
    extra = []
    if compiled:
        # torch.compile'd element-wise kernels (what "auto" picks for long runs); compiled
        # before the timing starts, the compile time recorded
        fused = _grid_field(n, opts, opts.hidden_precision, dev, kernels="compiled")
        t0 = time.perf_counter()
        _forward_backward(fused)
        compile_s = time.perf_counter() - t0
        extra.append(lambda: _forward_backward(fused))
    paper = HashEncodingConfig(level_policy="paper")
    naive_enc = NaiveHashEncoding(paper).to(dev)
    naive_mlp = ComplexDtypeMLP(
        ResidualField((8, 8), None, encoding=paper, mlp=mlp).mlp).to(dev)
    unit = torch.arange(n, device=dev, dtype=torch.float32) / (n - 1)
    coords = torch.stack(torch.meshgrid(unit, unit, indexing="ij"), -1).reshape(-1, 2)
    c2 = 2 * opts.hidden_features
    a = torch.randn(c2, c2 + 1, device=dev)
    b = torch.randn(c2 + 1, n * n, device=dev)

    def naive():
        z = naive_mlp(naive_enc(coords)) + 1
        (z.real.square() + z.imag.square()).sum().backward()

    rows = measure_interleaved([lambda: _forward_backward(field), lambda: _forward_backward(f32),
                                naive, lambda: torch.mm(a, b), _gemm_floor(field, n * n, dev),
                                *extra], dev, reps)
    p = n * n
    out = {"grid": n, "coords": p, "threads": torch.get_num_threads(),
           "hidden_precision": opts.hidden_precision,
           "field": {**rows[0], "coords_per_s": p / rows[0]["wall_s"]},
           "field_float32": {**rows[1], "coords_per_s": p / rows[1]["wall_s"]},
           "naive": {**rows[2], "coords_per_s": p / rows[2]["wall_s"]},
           # the hidden layer's float32 GEMM alone, unchunked: a rate no field can beat
           "hidden_gemm_gflops": 2 * c2 * (c2 + 1) * p / rows[3]["wall_s"] / 1e9,
           # every product of the field's MLP alone (forward + backward): its ceiling here
           "gemm_floor": {**rows[4], "coords_per_s": p / rows[4]["wall_s"],
                          "share_of_field": rows[4]["wall_s"] / rows[0]["wall_s"]}}
    out["speedup_vs_naive"] = rows[2]["wall_s"] / rows[0]["wall_s"]
    if compiled:
        out["gemm_floor"]["share_of_field_compiled"] = rows[4]["wall_s"] / rows[5]["wall_s"]
        out["field_compiled"] = {**rows[5], "coords_per_s": p / rows[5]["wall_s"],
                                 "first_call_s": compile_s,
                                 "kernels_as_run": fused.mlp.config.kernels}
        out["compiled_over_eager"] = rows[0]["wall_s"] / rows[5]["wall_s"]
    return out


def _worker_rate(n: int, settings: dict, barrier, seconds: float, kernels: str) -> dict:
    """One one-thread process: forward + backward of the default field for ``seconds``
    after every worker reached ``barrier``; coordinates per second. ``kernels="gemm_floor"``:
    the field's matrix products alone (:func:`_gemm_floor`)."""
    torch.set_num_threads(1)
    opts = RNFOptions(**settings)
    field = _grid_field(n, opts, opts.hidden_precision, "cpu",
                        "eager" if kernels == "gemm_floor" else kernels)
    step = (_gemm_floor(field, n * n, torch.device("cpu")) if kernels == "gemm_floor"
            else lambda: _forward_backward(field))
    for _ in range(2):
        step()
    barrier.wait()
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        reps += 1
    wall = time.perf_counter() - t0
    return {"reps": reps, "wall_s": wall, "coords_per_s": reps * n * n / wall}


def workers_throughput(n: int, opts: RNFOptions, workers: int = 2, seconds: float = 10.0,
                       kernels: str = "eager"):
    """The default field's throughput in ``workers`` one-thread processes at once -- how
    ptyflow uses a multi-core CPU (one-thread Dask workers): the sum of their rates."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    ctx = mp.get_context("spawn")
    with ctx.Manager() as mgr, ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        barrier = mgr.Barrier(workers)
        futs = [pool.submit(_worker_rate, n, opts.to_dict(), barrier, seconds, kernels)
                for _ in range(workers)]
        rows = [f.result() for f in futs]
    return {"grid": n, "workers": workers, "threads_per_worker": 1, "seconds": seconds,
            "kernels": kernels,
            "per_worker": rows, "coords_per_s": sum(r["coords_per_s"] for r in rows)}


# ---------------------------------------------------------------------------- epoch split
def _field_parts(fld, box):
    """Encoding input and the pieces to rebuild ``Field.region`` from a detached MLP output."""
    net = fld.net
    y0, x0, h, w = box
    dev, dt = net.offset.device, net.offset.dtype
    ys = pixel_to_unit(torch.arange(y0, y0 + h, device=dev, dtype=dt), net.shape)
    xs = pixel_to_unit(torch.arange(x0, x0 + w, device=dev, dtype=dt), net.shape)

    def assemble(delta):
        delta = delta.view(2, net.channels, h, w)
        base = net._base((slice(y0, y0 + h), slice(x0, x0 + w)))
        field, res = net._finish(from_split(base + delta)), net._finish(from_split(delta))
        if fld.mask is not None:
            m = fld.mask[y0:y0 + h, x0:x0 + w]
            field, res = field - res + res * m, res * m
        return field, res

    return net, ys, xs, assemble


def _staged_step(st, idx, data_loss, opts, clock):
    """One training step of ``reconstruct_rnf`` replayed stage by stage (same maths)."""
    st.optim.zero_grad(set_to_none=True)
    boxes = {"obj": (0, 0, *st.data.object_shape) if st.fourier else st.object_box(idx)}
    if st.probe_field is not None:
        boxes["probe"] = (0, 0, *st.probe_field.shape)
    flds = {"obj": st.obj_field, "probe": st.probe_field}
    graph = {}
    for name, box in boxes.items():
        net, ys, xs, assemble = _field_parts(flds[name], box)
        feats = clock("encoding", net.encoding.encode_grid, ys, xs)
        feats_l = feats.detach().requires_grad_(True)
        delta = clock("mlp_forward", net._mlp, feats_l.reshape(feats.shape[0], -1))
        delta_l = delta.detach().requires_grad_(True)
        graph[name] = (feats, feats_l, delta, delta_l, assemble)

    def forward_model():
        obj, res = graph["obj"][4](graph["obj"][3])
        probe = (graph["probe"][4](graph["probe"][3])[0] if "probe" in graph
                 else st.probe_fixed)
        fields = st.extra_fields()
        if st.fourier:
            wave = st.model.to_detector(st.model.exit_waves(obj, probe, idx), idx, **fields)
            return st.model.intensity(wave, idx), res
        pos = st.model.positions[idx]
        y0, x0 = boxes["obj"][:2]
        off = torch.tensor([y0, x0], dtype=pos.dtype, device=pos.device)
        psi = illuminate(probe, extract_patches(obj, pos - off, st.window))
        return st.model.intensity(st.model.to_detector(psi, idx, **fields), idx), res

    pred, res = clock("forward_model", forward_model)
    pred_l, res_l = pred.detach().requires_grad_(True), res.detach().requires_grad_(True)

    def loss():
        ld = data_loss(pred_l, st.frames[idx], st.detector_mask)  # as the real step
        spin = opts.from_modality("wavelet_spin", st.data)
        lr_ = (wavelet_sparsity(res_l, opts.mu, levels=opts.wavelet_levels, spin=spin)
               if opts.mu > 0 else 0)
        return ld + lr_

    total = clock("loss", loss)
    clock("loss", total.backward)
    res_grad = res_l.grad if res_l.grad is not None else torch.zeros_like(res_l)
    clock("forward_model", torch.autograd.backward, [pred, res], [pred_l.grad, res_grad])
    for feats, feats_l, delta, delta_l, _ in graph.values():
        if delta_l.grad is not None:
            clock("mlp_backward", delta.backward, delta_l.grad)
        if feats_l.grad is not None:
            clock("encoding", feats.backward, feats_l.grad)

    def optimise():
        st.geometry.pull_grad()
        st.optim.step()
        st.geometry.push()
        st.constrain()

    clock("optimiser", optimise)


def epoch_split(data, opts: RNFOptions, probe_prior=None, epochs: int = 3) -> dict:
    """Real RNF epoch, its stage-by-stage replay, rPIE epoch and FFT floor on ``data``."""
    from bench.suite_speed import fft_floor
    from ptytasks.engines.registry import run_engine

    threads = torch.get_num_threads()
    out = {"modality": data.modality, "n_frames": int(data.n_frames),
           "frame_shape": list(data.frame_shape), "object_shape": list(data.object_shape),
           "threads": threads, "load_start": list(os.getloadavg())}
    out["fft_floor_s"] = fft_floor(data.n_frames, data.frame_shape, threads=threads,
                                   device=opts.device)["batched_s_median"]
    # ptyflow's rPIE (its own thread policy inside the same thread budget)
    times = []
    run_engine("rpie", data, {"epochs": epochs, "device": opts.device},
               probe_prior=probe_prior,
               callback=lambda e, info: times.append(info["time"]))
    out["rpie_epoch_s"] = float(np.median(times[1:]))
    # the real RNF epoch, with the kernels a full run of opts.epochs would use
    size = (data.n_frames, int(np.prod(data.object_shape)), modality_of(data).min_steps_per_epoch)
    kern = opts.field_kernels(*size)
    o = RNFOptions(**{**opts.to_dict(), "epochs": epochs, "kernels": kern})
    r = reconstruct_rnf(data, o, probe_prior=probe_prior)
    wall = r.extras["epoch_seconds"]
    out["kernels"] = r.extras["field_kernels"]
    out["rnf_epoch_s"] = float(np.median(wall[1:]))
    out["rnf_first_epoch_s"] = float(wall[0])  # with a compile, its cost lands here
    out["cuda_graph"] = r.extras["cuda_graph"]
    if opts.kernels == "auto" and opts.long_run(*size):  # the other kernels, back to back
        other = "eager" if kern == "compiled" else "compiled"
        e = reconstruct_rnf(data, replace(o, kernels=other), probe_prior=probe_prior)
        out[f"rnf_epoch_{other}_s"] = float(np.median(e.extras["epoch_seconds"][1:]))
    if o.device.startswith("cuda") and o.cuda_graphs:  # and without CUDA graphs
        g = reconstruct_rnf(data, replace(o, kernels="eager", cuda_graphs=False),
                            probe_prior=probe_prior)
        out["rnf_epoch_eager_nographs_s"] = float(np.median(g.extras["epoch_seconds"][1:]))
        ref = r if kern == "eager" else e
        out["graphs_vs_nographs_loss_rel"] = float(np.max(np.abs(
            np.array(ref.loss_history) / np.array(g.loss_history) - 1)))
    # the replay: one warm-up epoch, then one timed epoch
    model, rdt, cdt = _resolve(data, o, None, o.dtype, torch.device(o.device))
    o = replace(o)  # _Setup resolves "auto" options in place
    torch.manual_seed(int(o.seed))
    st = _Setup(data, o, model, (None, probe_prior, None, None), torch.device(o.device), rdt,
                cdt)
    data_loss = make_data_loss(o.loss, "intensity" if o.loss == "poisson" else o.domain,
                               delta=st.data_delta)
    gen = torch.Generator().manual_seed(int(o.seed) + 7919)
    clock = None
    for _ in range(2):
        clock = _Clock(o.device)
        pos = None if st.fourier else st.model.positions
        for idx in batches(o.batching, pos, data.n_frames, st.batch, gen, o.device):
            _staged_step(st, idx, data_loss, o, clock)
    out["split_s"] = clock.t
    out["split_sum_s"] = sum(clock.t.values())
    # the split replays eager steps: against a CUDA-graph epoch the difference is no
    # overhead (it read -0.43 s on the star), so it is taken from the eager epoch there
    eager = out.get("rnf_epoch_eager_nographs_s")
    out["python_overhead_s"] = (eager if eager is not None else out["rnf_epoch_s"]) \
        - out["split_sum_s"]
    out["rnf_over_rpie"] = out["rnf_epoch_s"] / out["rpie_epoch_s"]
    out["rnf_over_fft_floor"] = out["rnf_epoch_s"] / out["fft_floor_s"]
    out["rpie_over_fft_floor"] = out["rpie_epoch_s"] / out["fft_floor_s"]
    out["load_end"] = list(os.getloadavg())
    return out


# ---------------------------------------------------------------------------- datasets
def datasets(quick: bool, data_dir: Path | None, sim_size: tuple[int, int] = (64, 100),
             only: tuple[str, ...] = ()):
    """``(name, data, probe_prior)``: the simulated set, then the real ones that exist;
    ``only``: these names alone (the others are not even loaded: a blind probe estimate of
    P25 costs a GPU lease's minutes on one CPU thread)."""
    from ptytasks.simulate.datasets import simulate

    frame, n = sim_size
    sim_name = f"sim-farfield-{n}x{frame}"
    if not only or sim_name in only:
        yield sim_name, simulate("farfield", frame_size=frame, n_positions=n, seed=0,
                                 dose=1e6), None  # fmt: skip
    if quick:
        return
    from bench import suite_realdata as R

    root = data_dir or R.data_dir(argparse.Namespace(data_dir=None))
    for name in ("farfield-star", "nearfield-p25", "fpm-blood"):
        if only and name not in only:
            continue
        path = root / R.FILES[name]
        if not path.exists():
            print(f"  skip {name}: {path} not found", flush=True)
            continue
        d = R.load(name, path)
        if d.positions_px is not None:
            d = R._placed(d)
        yield name, d, R.common_probe(d)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--grid", type=int, default=256, help="throughput grid side")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per timing (first dropped)")
    ap.add_argument("--settings", default="{}", help="RNFOptions overrides, JSON")
    ap.add_argument("--quick", action="store_true", help="simulated set only, 1 thread")
    ap.add_argument("--only", nargs="*", help="dataset names to run")
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--sim", type=int, nargs=2, default=[64, 100], metavar=("FRAME", "N"),
                    help="simulated set: frame side (px) and positions (default 64 100)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--eager-only", action="store_true",
                    help="no compiled-kernel measurements (nothing compiled: a quick check)")
    args = ap.parse_args(argv)
    threads = [1] if args.quick else args.threads
    opts = RNFOptions(device=args.device, **json.loads(args.settings))
    if args.eager_only:
        opts = replace(opts, kernels="eager")
    t0 = time.perf_counter()
    doc = {"suite": "rnf-speed", "machine": machine_info(), "settings": opts.to_dict(),
           "seeds": {"simulation": 0, "rnf": opts.seed}, "epochs": args.epochs,
           "throughput": [], "epochs_split": []}
    if not args.quick and args.device == "cpu" and (os.cpu_count() or 1) >= 2:
        wt = workers_throughput(args.grid, opts)
        print(json.dumps({"workers_coords_per_s": wt["coords_per_s"]}), flush=True)
        doc["workers_throughput"] = wt
        if not args.eager_only:
            wc = workers_throughput(args.grid, opts, kernels="compiled")
            print(json.dumps({"workers_compiled_coords_per_s": wc["coords_per_s"]}), flush=True)
            doc["workers_throughput_compiled"] = wc
        # the same two workers running only the field's matrix products: the ceiling
        wg = workers_throughput(args.grid, opts, kernels="gemm_floor")
        print(json.dumps({"workers_gemm_floor_coords_per_s": wg["coords_per_s"]}), flush=True)
        doc["workers_gemm_floor"] = wg
    for nt in threads:
        torch.set_num_threads(nt)
        tp = field_throughput(args.grid, opts, args.device, compiled=not args.eager_only)
        print(json.dumps({k: (v["coords_per_s"] if isinstance(v, dict) else v)
                          for k, v in tp.items()}, default=float), flush=True)
        doc["throughput"].append(tp)
        for name, data, probe in datasets(args.quick, args.data_dir, tuple(args.sim),
                                          tuple(args.only or ())):
            row = {"dataset": name, **epoch_split(data, opts, probe, args.epochs)}
            print(json.dumps(row, default=float), flush=True)
            doc["epochs_split"].append(row)
    doc["seconds"] = time.perf_counter() - t0
    doc["load_end"] = list(os.getloadavg())
    tag = args.device.split(":")[0] + ("-quick" if args.quick else "")
    out = args.out or RESULTS / f"rnf-speed-{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1, default=float))
    print(f"wrote {out} ({doc['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
