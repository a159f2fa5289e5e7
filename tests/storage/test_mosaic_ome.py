"""The mosaic pyramid is an OME-Zarr 0.5 image: validated by ome-zarr-models, opened by
ome-zarr's reader, with amplitude/phase channels and scale transforms in metres."""

from __future__ import annotations

import math

import numpy as np
import pytest
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Multiscales, Reader
from ome_zarr_models.common.omero import Omero
from ome_zarr_models.v05.image import Image

from ptytasks.tiling import Tile
from storage import ome
from storage.mosaic import MosaicWriter, TileLoader
from storage.store import RunStore

PX = 7.5e-9  # m; not a power of two, so a scale in pixels or a dropped factor shows
ORIGIN = (1.25e-6, -3.0e-7)  # m


def _stitch(store: RunStore) -> None:
    """Two overlapping 50 x 50 tiles, uniform weights (cores = canvases: no taper), into a
    2-level pyramid of a 70 x 90 mosaic."""
    rng = np.random.default_rng(3)
    tiles = []
    for i, (y0, x0) in enumerate(((0, 0), (20, 40))):
        obj = rng.uniform(0.2, 1.5, (50, 50)) * np.exp(1j * rng.uniform(-3, 3, (50, 50)))
        store.write_group(f"reconstruct/t{i}", {"object": obj.astype(np.complex64),
                                                "weight": np.ones((50, 50), np.float32)},
                          f"t{i}", dims={"object": ("y", "x"), "weight": ("y", "x")})  # fmt: skip
        tiles.append(Tile(f"t{i}", (0, i), np.arange(0), (y0, x0), (50, 50),
                          (y0, y0 + 50, x0, x0 + 50)))  # fmt: skip
    w = MosaicWriter.create(store, (70, 90), pixel_size=PX, origin=ORIGIN, shard=(32, 32),
                            chunk=(16, 16))  # fmt: skip
    w.stitch(tiles, TileLoader(store.path, {t.tile_id: f"reconstruct/{t.tile_id}" for t in tiles}))
    w.build_pyramid(2)


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory):
    """A 2-level pyramid of a tiny 70 x 90 mosaic from two overlapping tiles."""
    store = RunStore.create(tmp_path_factory.mktemp("ome") / "m.zarr")
    _stitch(store)
    return store


def test_validated_by_ome_zarr_models(mosaic):
    group = zarr.open_group(mosaic.path, path="mosaic", mode="r")
    image = Image.from_zarr(group)  # raises on any spec violation (dims, axes, transforms)
    attrs = image.ome_attributes
    assert attrs.version == "0.5" and group.attrs["ome"]["version"] == "0.5"
    (ms,) = attrs.multiscales
    assert [(a.name, a.type, a.unit) for a in ms.axes] == [
        ("c", "channel", None), ("y", "space", "meter"), ("x", "space", "meter")]
    assert [d.path for d in ms.datasets] == [f"level_{k}/amplitude_phase" for k in range(3)]
    for k, d in enumerate(ms.datasets):
        scale, shift = d.coordinateTransformations
        assert scale.type == "scale" and shift.type == "translation"
        np.testing.assert_allclose(scale.scale, [1, PX * 2**k, PX * 2**k], rtol=1e-12)
        # index -> metres lands on the level's own coordinate arrays (pixel centres)
        for ax, dim in ((1, "y"), (2, "x")):
            coord = group[f"level_{k}/{dim}"][...]
            i = np.arange(coord.size)
            np.testing.assert_allclose(scale.scale[ax] * i + shift.translation[ax], coord,
                                       rtol=0, atol=1e-15)  # fmt: skip
    omero = Omero.model_validate(group.attrs["ome"]["omero"])
    assert [c.label for c in omero.channels] == ["amplitude", "phase"]
    win = omero.channels[0].window  # from the coarsest level's covered amplitudes
    amp = group["level_2/amplitude_phase"][0][group["level_2/weight"][...] > 0]
    assert (win.min, win.max) == (amp.min(), amp.max()) and win.min < win.start < win.end < win.max


def test_channels_are_amplitude_and_phase_of_every_level(mosaic):
    w = MosaicWriter(mosaic.path)
    for k in range(3):
        obj, img = w.array("object", k)[...], w.array(ome.IMAGE, k)[...]
        assert img.shape == (2, *obj.shape) and img.dtype == np.float32
        np.testing.assert_allclose(img[0], np.abs(obj), rtol=1e-6)
        np.testing.assert_allclose(img[1], np.angle(obj), atol=1e-6)
    tree = mosaic.open_datatree()  # xarray still opens the store, with the new dims
    lvl1 = tree["mosaic/level_1"]
    assert lvl1.amplitude_phase.dims == ("c", "y", "x") and lvl1.object.dims == ("y", "x")
    np.testing.assert_allclose(lvl1.amplitude_phase.sel(c="phase"), np.angle(lvl1.object),
                               atol=1e-6)  # fmt: skip


def test_opened_by_ome_zarr_reader(mosaic):
    nodes = list(Reader(parse_url(f"{mosaic.path}/mosaic"))())
    node = nodes[0]
    assert any(isinstance(s, Multiscales) for s in node.specs)
    assert [tuple(d.shape) for d in node.data] == [(2, 70, 90), (2, 35, 45), (2, 18, 23)]
    assert node.metadata["channel_names"] == ["amplitude", "phase"]
    assert [a["name"] for a in node.metadata["axes"]] == ["c", "y", "x"]
    tr = node.metadata["coordinateTransformations"]
    assert [t[0]["scale"][1:] for t in tr] == [[PX * 2**k] * 2 for k in range(3)]
    got = np.asarray(node.data[2][1])
    np.testing.assert_array_equal(got, MosaicWriter(mosaic.path).array(ome.IMAGE, 2)[1])


def test_metadata_rules():
    a = ome.image_attrs("m", 1, pixel_size=1e-8, amplitude=np.full(10, 0.7))
    win = a["omero"]["channels"][0]["window"]
    assert win["start"] < 0.7 < win["end"]  # a flat image still gets a usable window
    assert a["omero"]["channels"][1]["window"]["end"] == pytest.approx(math.pi)
    for bad in (0.0, -1e-8, float("nan")):
        with pytest.raises(ValueError, match="pixel_size"):
            ome.image_attrs("m", 0, pixel_size=bad)


def test_pipeline_mosaic_is_ome(tmp_path):
    """The stitch stage (shard tasks + pyramid) leaves an OME image scaled by the data's
    pixel size, and ``ptyflow export`` still reads the complex object beside it."""
    from flows import stages
    from flows.export import export_npz
    from flows.params import PipelineParams
    from ptytasks.simulate import simulate
    from storage.cxi import write_cxi
    from tests.stage_runner import run_stages

    write_cxi(tmp_path / "ff.cxi", simulate("farfield", seed=2, frame_size=32,
                                            n_positions=40, known_probe=True))  # fmt: skip
    p = PipelineParams.from_mapping({
        "input": str(tmp_path / "ff.cxi"), "store": str(tmp_path / "ff.zarr"),
        "tiling": {"grid": [2, 1]}, "engine": {"engine": "rpie", "epochs": 1},
        "cluster": {"kind": "none"}})  # fmt: skip
    tiles = run_stages(p, evaluate=False)
    assert stages.stitch(p.store, tiles)["skipped"]
    with pytest.MonkeyPatch.context() as mp:  # an older mosaic format is stitched again
        mp.setattr(MosaicWriter, "FORMAT", "plain-complex")
        assert "skipped" not in stages.stitch(p.store, tiles)
    stages.stitch(p.store, tiles)
    px = RunStore(p.store, "r").root["raw"].attrs["pixel_size"]
    group = zarr.open_group(p.store, path="mosaic", mode="r")
    (ms,) = Image.from_zarr(group).ome_attributes.multiscales
    assert len(ms.datasets) == sum(k.startswith("level_") for k in group.group_keys())
    for k, d in enumerate(ms.datasets):
        np.testing.assert_allclose(d.coordinateTransformations[0].scale[1:], [px * 2**k] * 2,
                                   rtol=1e-12)  # fmt: skip
    node = next(iter(Reader(parse_url(f"{p.store}/mosaic"))()))
    obj = group["level_0/object"][...]
    np.testing.assert_allclose(np.asarray(node.data[0][1]), np.angle(obj), atol=1e-6)
    export_npz(p.store, tmp_path / "r.npz")
    np.testing.assert_array_equal(np.load(tmp_path / "r.npz")["object"], obj)
    # A changed tile invalidates the mosaic, not the other tiles; stitch runs again.
    store, step = RunStore(p.store), stages.tile_step(tiles[0]["tile_id"])
    changed = {k: 2 * store.read_array(f"{step}/{k}") for k in ("object", "weight")}
    store.write_group(step, changed, "changed")
    assert not store.is_complete("mosaic")
    assert store.is_complete(stages.tile_step(tiles[1]["tile_id"]))
    assert "skipped" not in stages.stitch(p.store, tiles)
    assert store.is_complete("mosaic")
