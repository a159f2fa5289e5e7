"""The training script: CLI, outputs, provenance, determinism."""

from __future__ import annotations

import json

import pytest
import torch

from ptytasks.learned.dncnn import load_denoiser
from ptytasks.learned.train_denoiser import TrainConfig, main, parse_args

TINY = ["--depth", "3", "--features", "4", "--steps", "3", "--batch", "2", "--patch", "24",
        "--pool", "2", "--log-every", "1", "--seed", "5"]


def test_help_exits_cleanly(capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(["--help"])
    assert exc.value.code == 0
    assert "--paper" in capsys.readouterr().out


def test_parse_paper_and_overrides():
    _, cfg = parse_args(["--paper", "--steps", "7", "--signed", "true"])
    assert (cfg.depth, cfg.features, cfg.patch, cfg.steps, cfg.signed) == (17, 64, 128, 7, True)
    _, cfg = parse_args([])
    assert cfg == TrainConfig()


def test_tiny_run_writes_weights_and_record(tmp_path):
    rec = main(TINY + ["--out", str(tmp_path / "a.pt")])
    assert (tmp_path / "a.pt").is_file()
    on_disk = json.loads((tmp_path / "a.json").read_text())
    assert on_disk["seed"] == 5 and on_disk["command"] == rec["command"]
    assert on_disk["command"].startswith("python -m ptytasks.learned.train_denoiser")
    assert len(on_disk["history"]) == 3
    assert on_disk["lipschitz"]["R_symbol_bound"] <= 1.0
    assert {"synthetic_psnr_denoised", "natural_psnr_denoised"} <= set(on_disk["validation"])
    # Same seed, same weights.
    main(TINY + ["--out", str(tmp_path / "b.pt")])
    a, b = load_denoiser(tmp_path / "a.pt"), load_denoiser(tmp_path / "b.pt")
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)
