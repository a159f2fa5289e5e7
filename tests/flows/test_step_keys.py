"""Step keys see the engines' defaults: a store must not serve a tile (or a prior) computed
under a default that the code has since changed (e.g. 3PIE's object alpha, 0.1 -> 0.6)."""

from __future__ import annotations

from dataclasses import fields

from flows.params import CalibrationParams, EngineParams
from flows.step_keys import calibration_key as _calibration_key
from ptytasks.engines import options
from ptytasks.engines.rnf_options import RNFOptions
from storage.atomic import fingerprint


def _keys(cal_object: str = "rpie") -> list[str]:
    engines = [EngineParams(engine=e).key() for e in ("rnf", "rpie", "epie")]
    return [fingerprint(k) for k in engines] + [
        fingerprint(_calibration_key(CalibrationParams(object=cal_object)))]


def test_keys_are_stable_and_differ_by_engine():
    assert _keys() == _keys()
    assert len(set(_keys()[:3])) == 3
    assert "prior_defaults" not in _calibration_key(CalibrationParams(object="uniform"))


def test_a_changed_blind_probe_constant_changes_the_calibration_key(monkeypatch):
    """The priors step estimates the blind probe: a store must not serve a probe made
    under the former near-field trial (300 epochs, no smooth start; hypotheses 27-28)."""
    from ptytasks.engines import blind_probe

    for obj in ("uniform", "rpie"):
        before = fingerprint(_calibration_key(CalibrationParams(object=obj)))
        with monkeypatch.context() as m:
            m.setattr(blind_probe, "NF_LOWPASS_EPOCHS", 0)
            assert fingerprint(_calibration_key(CalibrationParams(object=obj))) != before
        assert fingerprint(_calibration_key(CalibrationParams(object=obj))) == before


def test_every_blind_probe_constant_enters_its_settings(monkeypatch):
    """``blind_probe.settings()`` lists its constants by hand: one added later and not
    listed would let a store serve a probe made under the old value. Every upper-case
    number or tuple the module holds must move ``settings()``, but the escape flag's ratio,
    which only labels the report (``escaped``), not the probe."""
    from ptytasks.engines import blind_probe

    report_only = {"NF_ESCAPE_RATIO"}
    names = [n for n, v in vars(blind_probe).items()
             if n.isupper() and isinstance(v, int | float | tuple) and n not in report_only]
    assert {"FOOTPRINT_FRACTIONS", "NF_MAX_EPOCHS", "NF_LOWPASS_SIGMA"} <= set(names)
    before = blind_probe.settings()
    for n in names:
        v = getattr(blind_probe, n)
        with monkeypatch.context() as m:
            m.setattr(blind_probe, n, v + (0.5,) if isinstance(v, tuple) else v + 1)
            assert blind_probe.settings() != before, n


def test_a_changed_resolved_default_changes_the_pie_keys(monkeypatch):
    rnf, rpie, epie, cal = _keys()
    monkeypatch.setattr(options, "_SLICES_RPIE_ALPHA", 0.5)  # resolved at run time
    after = _keys()
    assert after[0] == rnf  # RNF's defaults did not change
    assert after[1] != rpie and after[2] != epie and after[3] != cal


def test_a_changed_refinement_default_changes_the_keys_of_tiles_that_refine(monkeypatch):
    """learn_positions: true (or position_correction as an option) runs the refinement's
    own defaults: a changed default must not serve tiles refined under the old one; tiles
    that do not refine keep their key."""
    runs = [EngineParams(engine=e, learn_positions=True) for e in ("rpie", "epie", "pine")]
    runs.append(EngineParams(engine="rpie", options={"position_correction": True}))
    still = EngineParams(engine="rpie")
    before = [fingerprint(p.key()) for p in runs]
    plain = fingerprint(still.key())
    init = options.PositionCorrectionOptions.__init__
    names = [f.name for f in fields(options.PositionCorrectionOptions)]
    changed = list(init.__defaults__)
    changed[names.index("search_radius")] += 3  # the dataclass's default, as a code change
    monkeypatch.setattr(init, "__defaults__", tuple(changed))
    after = [fingerprint(p.key()) for p in runs]
    assert all(a != b for a, b in zip(after, before, strict=True))
    assert fingerprint(still.key()) == plain


def test_a_changed_field_default_changes_the_rnf_key(monkeypatch):
    rnf = _keys()[0]
    lr = {f.name: f for f in fields(RNFOptions)}["lr_zernike"]
    monkeypatch.setattr(lr, "default", lr.default * 4)
    assert _keys()[0] != rnf


def test_a_changed_modality_rule_changes_the_rnf_key(monkeypatch):
    """RNF's ``"auto"`` options read modality attributes (the near field's spun wavelet
    term, hypothesis 32): a tile made under the other setting must not be reused."""
    from ptytasks.modalities import get

    rnf = _keys()[0]
    monkeypatch.setattr(type(get("nearfield")), "spun_wavelet", False)
    assert _keys()[0] != rnf


def test_a_pupil_or_surface_file_rewritten_in_place_changes_the_calibration_key(tmp_path):
    """A measured pupil re-measured under the same path (or a surface reference folder
    with one file rewritten) must not be served the priors made from the old one."""
    import os

    import numpy as np

    pupil = tmp_path / "pupil.npy"
    np.save(pupil, np.ones((4, 4), np.complex64))
    ref = tmp_path / "ref"
    ref.mkdir()
    (ref / "f0.tif").write_bytes(b"a")
    cal = CalibrationParams(pupil_file=str(pupil), surface_reference=str(ref))
    before = fingerprint(_calibration_key(cal))
    np.save(pupil, 2 * np.ones((4, 4), np.complex64))
    os.utime(pupil, ns=(1, 1))  # even with the old mtime, the size or content differs
    after_pupil = fingerprint(_calibration_key(cal))
    assert after_pupil != before
    (ref / "f0.tif").write_bytes(b"b")
    os.utime(ref / "f0.tif", ns=(2, 2))
    assert fingerprint(_calibration_key(cal)) != after_pupil


def test_tiles_on_a_gpu_worker_run_the_engine_on_its_gpu(monkeypatch):
    """On local_cuda (dask-cuda) workers the engines ran on the CPU, their default device,
    beside an idle GPU: where the worker is given a GPU and the user named no device, the
    tile asks for it; a device the user named, or an engine without one, is left alone."""
    import torch

    from flows.cluster import on_gpu_worker

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert "device" not in on_gpu_worker("rnf", {})  # a plain worker on a GPU machine
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # as dask-cuda gives each worker
    assert on_gpu_worker("rnf", {"epochs": 3})["device"] == "cuda"
    assert on_gpu_worker("rpie", {})["device"] == "cuda"
    assert on_gpu_worker("rnf", {"device": "cpu"})["device"] == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "device" not in on_gpu_worker("rnf", {})


def test_the_epoch_count_is_set_in_one_place():
    """options.iterations / options.epochs overrode engine.epochs while progress and logs
    counted engine.epochs ('epoch 6/2'): refused, naming where to set it."""
    import pytest
    from pydantic import ValidationError

    for name in ("iterations", "epochs"):
        with pytest.raises(ValidationError, match=f"options.{name}"):
            EngineParams(engine="epie", epochs=2, options={name: 6})


def test_a_main_setting_the_engine_does_not_have_is_refused():
    """alpha / beta with RNF, mu / loss with a PIE engine were dropped silently (and still
    changed the tiles' keys)."""
    import pytest
    from pydantic import ValidationError

    for engine, name, value in (("rnf", "alpha", 0.5), ("rnf", "beta", 0.2),
                                ("epie", "mu", 1.0), ("pine", "loss", "l2")):
        with pytest.raises(ValidationError, match=f"(?s){name}.*engine .{engine}. has no setting"):
            EngineParams(engine=engine, **{name: value})
    EngineParams(engine="rpie", alpha=0.5)  # its own: fine
    EngineParams(engine="rnf", mu=1.0)


def test_modes_or_slices_an_engine_cannot_take_are_refused():
    """probe_modes / n_slices with 'learned' (no such options) were dropped silently, and so
    was a slice_thickness with one slice; the defaults (1 mode, 1 slice) suit every engine."""
    import pytest
    from pydantic import ValidationError

    from ptytasks.engines.registry import ENGINES

    for name, value in (("probe_modes", 3), ("n_slices", 2)):
        with pytest.raises(ValidationError, match=f"(?s){name}.*engine 'learned' has no setting"):
            EngineParams(engine="learned", **{name: value})
    with pytest.raises(ValidationError, match="(?s)slice_thickness.*n_slices"):
        EngineParams(engine="rpie", slice_thickness=1e-6)
    for engine in ENGINES:
        EngineParams(engine=engine, probe_modes=1, n_slices=1)
    EngineParams(engine="rnf", probe_modes=3, n_slices=2, slice_thickness=1e-6)  # its own
