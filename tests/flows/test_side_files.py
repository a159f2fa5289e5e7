"""The files a run leaves beside its store (metrics table, previews) are replaced whole: a
crash while writing one keeps the old file and leaves no partial file behind."""

from __future__ import annotations

import pytest

from flows.runner import write_metrics_table


class _Unprintable:
    def __str__(self):
        raise RuntimeError("crash while writing")


def test_a_crash_while_writing_the_metrics_table_keeps_the_old_one(tmp_path):
    path = tmp_path / "run_metrics.csv"
    write_metrics_table({"truth_complex_error": 0.1}, path)
    before = path.read_text()
    with pytest.raises(RuntimeError, match="crash"):
        write_metrics_table({"truth_complex_error": 0.2, "bad": _Unprintable()}, path)
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run_metrics.csv"]
