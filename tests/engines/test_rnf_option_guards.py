"""RNF options that were silently ignored or broke a run without a word (audit of the RNF
engine): each is now honoured or refused, naming the option."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
import torch

from ptytasks.engines.rnf import reconstruct_rnf
from ptytasks.engines.rnf_options import RNFOptions
from ptytasks.engines.rnf_parts import Field
from ptytasks.simulate.datasets import simulate


@pytest.fixture(scope="module")
def tiny():
    return simulate("farfield", frame_size=24, n_positions=9, overlap=0.6, scan="raster",
                    probe="gaussian", known_probe=True, seed=0)  # fmt: skip


@pytest.mark.parametrize("bad", [{"hidden_layers": 3}, {"hidden_layers": -1},
                                 {"dtype": "double"}, {"dtype": "float16"},
                                 {"mode_field": "pixel"},
                                 {"learn_distance": True, "learn_wavelength": True,
                                  "lr_wavelength": 0.5}])  # fmt: skip
def test_options_that_would_be_ignored_or_overflow_are_refused(bad):
    name = next(k for k in bad if k not in ("learn_distance", "learn_wavelength"))
    with pytest.raises(ValueError, match=name):
        RNFOptions(**bad)


def test_a_float64_field_keeps_float64_hidden_products():
    """``hidden_precision="auto"`` chose bfloat16 on a native-bfloat16 CPU or GPU whatever
    the field's precision, so a float64 run was ~1 % off its own float32-product result."""
    prior = torch.ones(32, 32, dtype=torch.complex128)
    out = {}
    for prec in ("auto", "float32"):
        torch.manual_seed(0)
        f = Field((32, 32), prior, RNFOptions(hidden_precision=prec, out_init_scale=1.0,
                                              dtype="float64"), seed=3, dtype=torch.float64)
        with torch.no_grad():
            for p in f.net.encoding.tables:
                p.mul_(1e3)  # features ~0.1, as after training
            out[prec] = f.full()[1]
    assert torch.equal(out["auto"], out["float32"])
    with pytest.raises(ValueError, match="bfloat16"):
        Field((32, 32), prior, RNFOptions(hidden_precision="bfloat16", dtype="float64"),
              seed=3, dtype=torch.float64).full()


def test_a_float64_prior_is_not_rounded_to_float32():
    p = torch.exp(1j * torch.linspace(0, 1, 32 * 32, dtype=torch.float64)).reshape(32, 32)
    f = Field((32, 32), p, RNFOptions(dtype="float64"), seed=1, dtype=torch.float64)
    got = torch.complex(f.net.prior_split[0, 0], f.net.prior_split[1, 0])
    assert torch.equal(got, p)


def test_learned_frequencies_of_the_probe_wait_out_its_warm_up(tiny):
    """With ``learn_omega`` the probe's phasor frequencies sat in one group with the
    object's, which its warm-up never froze: the 'frozen' probe changed."""
    base = dict(epochs=2, batch_size=3, hidden_features=16, loss="l1", probe_warmup_epochs=2)
    start = reconstruct_rnf(tiny, RNFOptions(epochs=0, batch_size=3, hidden_features=16,
                                             loss="l1", learn_omega=True))  # fmt: skip
    r = reconstruct_rnf(tiny, RNFOptions(**base, learn_omega=True, lr_omega=0.05))
    assert np.array_equal(r.extras["probe_residual"], start.extras["probe_residual"])


def test_a_checkpoint_of_a_run_stopped_on_its_plateau_resumes_stopped(tiny):
    """The checkpoint written at a plateau stop was resumed for one more epoch."""
    base = dict(epochs=8, batch_size=3, hidden_features=16, loss="l1", plateau_patience=1,
                plateau_tol=0.5)
    whole = reconstruct_rnf(tiny, RNFOptions(**base))
    stop = whole.extras["stopped_early_at"]
    assert stop is not None and stop < 7

    class Killed(Exception):
        pass

    def kill(epoch, info):
        if epoch == stop:  # after the plateau's checkpoint was written
            raise Killed

    with tempfile.TemporaryDirectory() as d:
        ck = os.path.join(d, "c.ckpt")
        with pytest.raises(Killed):
            reconstruct_rnf(tiny, RNFOptions(**base), checkpoint=ck, callback=kill)
        resumed = reconstruct_rnf(tiny, RNFOptions(**base), checkpoint=ck)
    assert len(resumed.loss_history) == len(whole.loss_history)
    assert resumed.extras["stopped_early_at"] == stop
    assert np.array_equal(resumed.object, whole.object)


def test_an_aperture_asked_for_where_it_cannot_apply_is_refused(tiny):
    with pytest.raises(ValueError, match="probe_aperture"):
        reconstruct_rnf(tiny, RNFOptions(epochs=1, probe_aperture=True, learn_probe=False))


@pytest.mark.parametrize("opt", [{"probe_modes": 2}, {"n_slices": 3}])
def test_scanning_only_options_are_refused_on_fourier_data(opt):
    """RNF's Fourier form has no probe modes or object slices: it dropped them silently
    for a library caller (the pipeline refuses them before a run: flows/checks.py)."""
    data = simulate("fourier", image_size=12, upsample=2, na=0.1, na_illum=0.15, seed=0)
    with pytest.raises(ValueError, match=next(iter(opt))):
        reconstruct_rnf(data, RNFOptions(epochs=1, **opt))
