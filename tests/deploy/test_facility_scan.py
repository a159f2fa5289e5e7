"""What the facility scan finds and what a sidecar may set: a vanished or unreadable file is
that dataset's decision (never the scan's error), a TIFF frame folder is one dataset, links
out of the data root are not followed, sidecars set only bounded science parameters."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

from flows.facility import Decision, FacilityParams, decide, store_for
from flows.params import ConfigError, PipelineParams


@pytest.fixture
def root(tmp_path):
    raw = tmp_path / "raw"
    (raw / "day1").mkdir(parents=True)
    (raw / "a.cxi").write_bytes(b"a" * 1000)
    (raw / "day1" / "b.h5").write_bytes(b"b" * 1000)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.cxi").write_bytes(b"s" * 1000)
    (tmp_path / "cfg.yaml").write_text(
        yaml.safe_dump({"engine": {"engine": "rpie"}, "cluster": {"kind": "none"}})
    )
    return tmp_path


def _settings(root, **kw) -> FacilityParams:
    kw = {"min_age_seconds": 0, **kw}
    return FacilityParams(data_root=str(root / "raw"), output_root=str(root / "out"),
                          config=str(root / "cfg.yaml"), **kw)  # fmt: skip


def _scan(root, **kw) -> dict[str, Decision]:
    return {d.name: d for d in decide(_settings(root, **kw), {})}


def test_a_file_vanishing_mid_scan_is_reported_not_fatal(root, monkeypatch):
    import flows.facility as fac

    real = fac.source_state

    def racing(path, cached=None, **kw):
        if path.name == "a.cxi":
            path.unlink()  # deleted between the listing and the stat
        return real(path, cached, **kw)

    monkeypatch.setattr(fac, "source_state", racing)
    ds = _scan(root)
    assert (ds["a.cxi"].action, ds["a.cxi"].reason) == ("vanished", "disappeared during the scan")
    assert ds["day1/b.h5"].action == "process"


def test_an_unreadable_file_is_that_datasets_failure(root, monkeypatch):
    import flows.facility_scan as scan

    real = scan.file_digest

    def denied(path):
        if Path(path).name == "a.cxi":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(scan, "file_digest", denied)
    ds = _scan(root)
    assert ds["a.cxi"].action == "invalid" and "PermissionError" in ds["a.cxi"].reason
    assert ds["day1/b.h5"].action == "process"


def _frames(folder: Path, n: int, value: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        tifffile.imwrite(folder / f"frame_{i:04d}.tif", np.full((8, 8), value + i, np.uint16))


def test_a_tiff_frame_folder_is_one_dataset(root, monkeypatch):
    monkeypatch.setattr("flows.facility._store_finished", lambda store: True)
    raw = root / "raw"
    _frames(raw / "day1" / "scan07", 4)
    (raw / "day1" / "scan07.csv").write_text("y,x\n" + "".join(f"{i},0\n" for i in range(4)))
    (raw / "stacks").mkdir()
    for name in ("s1.tif", "s2.tif"):  # multi-page stacks: a dataset each
        tifffile.imwrite(raw / "stacks" / name, np.zeros((3, 8, 8), np.uint16))
    tifffile.imwrite(raw / "single.tif", np.zeros((3, 8, 8), np.uint16))
    s = _settings(root, pipeline_version="1.0")
    ds = {d.name: d for d in decide(s, {})}
    assert sorted(ds) == ["a.cxi", "day1/b.h5", "day1/scan07", "single.tif", "stacks/s1.tif",
                          "stacks/s2.tif"]  # fmt: skip
    scan = ds["day1/scan07"]
    assert scan.action == "process" and scan.params["input"] == str(raw / "day1" / "scan07")
    assert scan.store == str(store_for(s, Path("day1/scan07")))
    assert scan.source["size"] > 4 * 128
    from storage.readers import read_any

    assert read_any(scan.path, wavelength=1e-10, pixel_size=1e-8).frames.shape == (4, 8, 8)

    def entry(d: Decision) -> dict:  # the ledger entry of a finished run of ``d``
        return {"day1/scan07": {"fingerprint": d.fingerprint, "params": d.params_fp,
                                "version": "1.0", "status": "ok", **d.source}}  # fmt: skip

    assert {d.name: d for d in decide(s, entry(scan))}["day1/scan07"].action == "skip"
    _frames(raw / "day1" / "scan07", 1, value=99)  # one frame rewritten
    changed = {d.name: d for d in decide(s, entry(scan))}["day1/scan07"]
    assert (changed.action, changed.reason) == ("process", "content changed")
    (raw / "day1" / "scan07.csv").write_text("y,x\n" + "".join(f"{i},1\n" for i in range(4)))
    moved = {d.name: d for d in decide(s, entry(changed))}["day1/scan07"]
    assert moved.reason == "content changed"  # the positions are part of the content


def test_links_out_of_the_data_root_are_not_followed(root):
    raw, outside = root / "raw", root / "outside"
    (raw / "leak.cxi").symlink_to(outside / "secret.cxi")
    (raw / "alias.cxi").symlink_to(raw / "a.cxi")  # a link within the root is a dataset
    (raw / "elsewhere").symlink_to(outside, target_is_directory=True)
    (raw / "a.cxi.yaml").symlink_to(outside / "secret.cxi")
    _frames(raw / "scan09", 2)
    tifffile.imwrite(outside / "planted.tif", np.zeros((8, 8), np.uint16))
    (raw / "scan09" / "frame_0002.tif").symlink_to(outside / "planted.tif")
    ds = _scan(root)
    assert ds["scan09"].action == "invalid" and "frame_0002.tif: a link out" in ds["scan09"].reason
    assert (ds["leak.cxi"].action, ds["leak.cxi"].reason) == (
        "refused", "link to a file outside data_root: not followed")  # fmt: skip
    assert ds["elsewhere"].action == "refused" and "elsewhere/secret.cxi" not in ds
    assert ds["alias.cxi"].action == "process"
    assert ds["a.cxi"].action == "invalid" and "link out of data_root" in ds["a.cxi"].reason


def _sidecar(root, doc) -> Decision:
    (root / "raw" / "a.cxi.yaml").write_text(yaml.safe_dump(doc))
    return _scan(root)["a.cxi"]


@pytest.mark.parametrize(("doc", "field"), [
    ({"cluster": {"kind": "address", "address": "tcp://evil:8786"}}, "cluster"),
    ({"input": "/etc/passwd"}, "input"),
    ({"calibration": {"surface_reference": "/etc/passwd"}}, "calibration.surface_reference"),
    ({"calibration": {"pupil_file": "../../outside/secret.cxi"}}, "calibration.pupil_file"),
    ({"calibration": {"object": "learned", "learned_weights": "/tmp/w.pt"}},
     "calibration.learned_weights"),
    ({"ingest": {"options": {"positions": "/etc/hosts"}}}, "ingest.options.positions"),
    ({"engine": {"options": {"iterations": 10**8}}}, "engine.options"),
    ({"engine": {"epochs": 10**8}}, "engine.epochs"),
    ({"tiling": {"grid": [1000, 1000]}}, "tiling.grid"),
])  # fmt: skip
def test_sidecars_may_set_only_bounded_science(root, doc, field):
    d = _sidecar(root, doc)
    assert d.action == "invalid", d
    assert d.reason.startswith(str(root / "raw" / "a.cxi.yaml")) and field in d.reason
    assert _scan(root)["day1/b.h5"].action == "process"  # the others go on


def test_sidecar_paths_inside_the_root_are_resolved(root):
    (root / "raw" / "refs").mkdir()
    (root / "raw" / "refs" / "blank.cxi").write_bytes(b"r")
    d = _sidecar(root, {"calibration": {"surface_reference": "refs/blank.cxi",
                                        "object": "learned", "learned_weights": "layout"},
                        "ingest": {"z1": 3.65e-3}, "engine": {"epochs": 200}})  # fmt: skip
    assert d.action == "process", d.reason
    cal = d.params["calibration"]
    assert cal["surface_reference"] == str((root / "raw" / "refs" / "blank.cxi").resolve())
    assert cal["learned_weights"] == "layout"  # a committed preset, not a path
    assert d.params["engine"]["epochs"] == 200 and d.params["cluster"]["kind"] == "none"


@pytest.mark.parametrize(("section", "value", "field"), [
    ("engine", {"epochs": 10_001}, "engine.epochs"),
    ("calibration", {"prior_iterations": 10_001}, "calibration.prior_iterations"),
    ("engine", {"batch_size": 70_000}, "engine.batch_size"),
    ("tiling", {"grid": [0, 2]}, "tiling.grid.0"),
    ("tiling", {"grid": [2, 257]}, "tiling.grid.1"),
    ("cluster", {"n_workers": 5000}, "cluster.n_workers"),
    ("cluster", {"threads_per_worker": 1000}, "cluster.threads_per_worker"),
    ("subsample", {"stride": 100}, "subsample.stride"),
])  # fmt: skip
def test_parameter_bounds_hold_for_every_caller(section, value, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        PipelineParams.from_mapping({section: value}, source="run.yaml", input="x", store="y")
    PipelineParams.from_mapping({"engine": {"epochs": 10_000}}, input="x", store="y")
    schema = PipelineParams.model_json_schema()["$defs"]  # the UI form shows the limits
    assert schema["EngineParams"]["properties"]["epochs"]["maximum"] == 10_000
    assert schema["ClusterParams"]["properties"]["n_workers"]["anyOf"][0]["maximum"] == 1024


def test_the_shared_config_may_still_choose_the_cluster(root):
    shared = {"cluster": {"kind": "address", "address": "tcp://10.0.0.5:8786"}}
    (root / "cfg.yaml").write_text(yaml.safe_dump(shared))
    assert _scan(root)["a.cxi"].params["cluster"]["address"] == "tcp://10.0.0.5:8786"


def test_a_file_still_being_written_waits_unread(root, monkeypatch):
    def no_reading(path):
        raise AssertionError(f"{path} was read")

    os.utime(root / "raw" / "a.cxi")  # just written
    os.utime(root / "raw" / "day1" / "b.h5", (1e9, 1e9))
    monkeypatch.setattr("flows.facility_scan.file_digest", no_reading)
    ds = _scan(root, min_age_seconds=60)
    assert (ds["a.cxi"].action, ds["day1/b.h5"].action) == ("wait", "invalid")
