"""Replacing a step or a store: moved aside whole, then deleted (storage.trash)."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest

import storage.trash as trash
from storage.lock import StoreLock
from storage.store import RunStore


def _rerun(path):
    s = RunStore(path)
    s.write_group("metrics", {"a": np.zeros(3)}, fingerprint_="v1")
    s.write_group("metrics", {"a": np.ones(3)}, fingerprint_="v2")  # a changed parameter
    return s


def test_a_store_reached_through_a_link_keeps_its_trash_beside_the_real_store(tmp_path):
    real = tmp_path / "scratch" / "run.zarr"
    real.mkdir(parents=True)
    (tmp_path / "home").mkdir()
    link = tmp_path / "home" / "run.zarr"
    link.symlink_to(real)
    assert trash.trash_dir(link) == tmp_path / "scratch" / "run.zarr.trash"
    s = _rerun(link)
    assert s.marker("metrics") is not None
    np.testing.assert_array_equal(np.asarray(s.root["metrics/a"]), np.ones(3))
    assert not (tmp_path / "home" / "run.zarr.trash").exists()
    RunStore(link, mode="w")  # replaced through the link, which stays a link
    assert link.is_symlink() and real.is_dir() and not RunStore(link).exists("metrics")


@pytest.mark.parametrize("code", [errno.EXDEV, errno.EACCES])
def test_a_step_is_rerun_where_no_rename_is_possible(tmp_path, monkeypatch, code):
    # another file system under the store, or a read-only folder above it: deleted in place
    real_rename = os.rename

    def rename(a, b):
        if str(b).endswith("content"):
            raise OSError(code, os.strerror(code))
        return real_rename(a, b)

    monkeypatch.setattr(trash.os, "rename", rename)
    s = _rerun(tmp_path / "run.zarr")
    assert s.marker("metrics") is not None
    np.testing.assert_array_equal(np.asarray(s.root["metrics/a"]), np.ones(3))


def test_another_writer_emptying_the_trash_does_not_fail_a_rerun(tmp_path, monkeypatch):
    real_mkdtemp = trash.tempfile.mkdtemp
    raced = []

    def mkdtemp(dir):
        if not raced:  # the other writer's discard removes the empty trash just now
            raced.append(1)
            os.rmdir(dir)
        return real_mkdtemp(dir=dir)

    monkeypatch.setattr(trash.tempfile, "mkdtemp", mkdtemp)
    s = _rerun(tmp_path / "run.zarr")
    assert raced and s.marker("metrics") is not None


def test_bins_a_killed_writer_left_go_when_the_next_run_takes_the_lock(tmp_path):
    store = tmp_path / "run.zarr"
    RunStore(store)
    left = trash.trash_dir(store) / "tmpkilled" / "content"
    left.mkdir(parents=True)
    (left / "chunk").write_bytes(b"x" * 100)
    with StoreLock(store):
        assert not trash.trash_dir(store).exists()
