"""Network weights key tile results and facility decisions by content, not by path: weights
retrained in place under the same name must not be mistaken for the old ones."""

from __future__ import annotations

import os
import time

import yaml

from flows.facility import FacilityParams, Ledger, decide
from flows.params import CalibrationParams, EngineParams, IngestParams
from flows.step_keys import network_weights


def _rewrite(path, data: bytes) -> None:
    path.write_bytes(data)
    t = time.time() + 5  # a later mtime even on coarse-clock file systems
    os.utime(path, (t, t))


def test_only_runs_with_a_network_carry_weights():
    assert network_weights(EngineParams(engine="rpie"), CalibrationParams()) == {}
    assert network_weights(EngineParams(), CalibrationParams(object="epie")) == {}
    w = network_weights(EngineParams(engine="learned"), CalibrationParams(object="learned"))
    assert set(w) == {"engine", "object_prior"} and w["engine"] == w["object_prior"]
    # sha-256 of each committed default weights file: the preset's own and its 64x64 set
    assert all(len(d) == 64 for v in w.values() for d in v.split(","))
    layout = network_weights(EngineParams(), CalibrationParams(object="learned",
                                                               learned_weights="layout"))
    assert layout["object_prior"] != w["object_prior"]
    pine = network_weights(EngineParams(engine="pine"), CalibrationParams(object="pine"))
    assert pine["denoiser"] == pine["prior_denoiser"]


def test_a_preset_hashes_its_per_frame_size_weights(tmp_path, monkeypatch):
    """The 64x64 set is chosen only once frames are read: retraining it must change the key."""
    import shutil

    from ptytasks.learned import inversion

    for f in inversion.WEIGHTS_DIR.glob("ppn_default*.pt"):
        shutil.copy(f, tmp_path / f.name)
    monkeypatch.setattr(inversion, "WEIGHTS_DIR", tmp_path)
    eng = EngineParams(engine="learned")
    before = network_weights(eng, CalibrationParams())["engine"]
    assert before.count(",") == 1
    _rewrite(tmp_path / "ppn_default_64.pt", b"retrained 64x64 set")
    assert network_weights(eng, CalibrationParams())["engine"] != before


def test_weights_rewritten_in_place_change_the_digest(tmp_path):
    f = tmp_path / "mine.pt"
    f.write_bytes(b"first weights")
    eng = EngineParams(engine="learned", options={"weights": str(f)})
    before = network_weights(eng, CalibrationParams())["engine"]
    assert network_weights(eng, CalibrationParams())["engine"] == before  # cached, stable
    _rewrite(f, b"other weights")  # same size, new content
    assert network_weights(eng, CalibrationParams())["engine"] != before
    f.unlink()
    assert network_weights(eng, CalibrationParams()) == {"engine": "missing"}


def test_facility_reprocesses_when_weights_are_retrained_in_place(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.cxi").write_bytes(b"a" * 100)
    old = time.time() - 3600
    os.utime(raw / "a.cxi", (old, old))
    weights = tmp_path / "ppn_mine.pt"
    weights.write_bytes(b"v1")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"engine": {"engine": "learned",
                                              "options": {"weights": str(weights)}}}))
    s = FacilityParams(data_root=str(raw), output_root=str(tmp_path / "out"), config=str(cfg),
                       pipeline_version="0.1.0")  # fmt: skip
    led = Ledger(s.output_root)
    for d in decide(s, {}):
        led.record(d, "ok", "0.1.0")
    monkeypatch.setattr("flows.facility._store_finished", lambda store: True)
    assert [d.action for d in decide(s, Ledger(s.output_root).entries)] == ["skip"]
    _rewrite(weights, b"v2")
    ds = decide(s, Ledger(s.output_root).entries)
    assert [(d.action, d.reason) for d in ds] == [("process", "parameters changed")]


def test_a_tile_reruns_after_its_weights_are_retrained_in_place(tmp_path):
    import shutil

    import torch

    from flows import stages
    from flows.params import SubsampleParams, TilingParams
    from ptytasks.learned.inversion import default_weights
    from ptytasks.simulate import simulate
    from storage.cxi import write_cxi

    cxi = write_cxi(tmp_path / "a.cxi", simulate("farfield", frame_size=32, n_positions=9,
                                                 known_probe=True, seed=3))  # fmt: skip
    weights = tmp_path / "ppn_mine.pt"
    shutil.copy(default_weights("ppn"), weights)
    store = str(tmp_path / "a.zarr")
    engine = EngineParams(engine="learned", options={"weights": str(weights)})
    cal = CalibrationParams()
    stages.ingest(str(cxi), store, IngestParams())
    stages.subsample(store, SubsampleParams())
    stages.calibrate(store, cal)
    tile = stages.plan(store, TilingParams())[0]
    assert stages.reconstruct_tile(store, tile, engine, cal)["skipped"] is False
    assert stages.reconstruct_tile(store, tile, engine, cal)["skipped"] is True
    ckpt = torch.load(weights, weights_only=True)
    ckpt["meta"]["retrained"] = True  # same path, new content
    torch.save(ckpt, weights)
    assert stages.reconstruct_tile(store, tile, engine, cal)["skipped"] is False
