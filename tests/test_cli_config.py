"""Command-line configuration: YAML validated by the pipeline's models, env overrides,
flags on top; a missing or invalid file is a clear error with exit code 2 (no run)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from flows.cli import app
from flows.params import PipelineParams

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture
def captured(monkeypatch):
    """Replace the pipeline run: record the parameters the command built."""
    seen = {}

    def fake_run(params, *, progress=True, verbose=False):
        seen["params"] = params
        return {"store": params.store, "tiles": [], "metrics": {"trusted_pixels": 1.0}}

    monkeypatch.setattr("flows.runner.run_pipeline", fake_run)
    return seen


@pytest.fixture
def data(tmp_path):
    p = tmp_path / "scan.cxi"
    p.write_bytes(b"")  # existence is all `run` checks before the pipeline reads it
    return p


@pytest.mark.parametrize("cmd", [[], ["demo"], ["simulate"], ["ingest"], ["run"], ["export"],
                                 ["show"], ["server"], ["server", "start"],
                                 ["server", "worker"], ["server", "deploy"]])  # fmt: skip
def test_every_command_has_help(cmd):
    res = runner.invoke(app, [*cmd, "--help"])
    assert res.exit_code == 0, res.output
    assert "Usage" in res.output


def test_yaml_then_env_then_flags(tmp_path, data, captured, monkeypatch):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"input": "elsewhere.cxi", "store": "x.zarr",
                                   "engine": {"engine": "epie", "epochs": 7, "seed": 3},
                                   "tiling": {"grid": [3, 3]}}))  # fmt: skip
    monkeypatch.setenv("PTYFLOW__ENGINE__EPOCHS", "11")
    monkeypatch.setenv("PTYFLOW__CLUSTER__KIND", "none")
    res = runner.invoke(app, ["run", str(data), "--out", str(tmp_path / "s.zarr"),
                              "--config", str(cfg), "--engine", "rpie", "--keep", "0.5",
                              "--grid", "2x1"])  # fmt: skip
    assert res.exit_code == 0, res.output
    p = captured["params"]
    assert p.input == str(data) and p.store == str(tmp_path / "s.zarr")  # flags win
    assert (p.engine.engine, p.engine.epochs, p.engine.seed) == ("rpie", 11, 3)  # env > yaml
    assert p.tiling.grid == (2, 1) and p.cluster.kind == "none"
    assert (p.subsample.method, p.subsample.fraction) == ("fraction", 0.5)
    assert (tmp_path / "s_metrics.csv").read_text().startswith("metric,value")


def test_config_alone_gives_input_and_store(tmp_path, data, captured):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"input": str(data), "store": str(tmp_path / "r.zarr")}))
    res = runner.invoke(app, ["run", "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    assert captured["params"].store == str(tmp_path / "r.zarr")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "configuration file not found"),
        ("engine: [unclosed\n", "not valid YAML"),
        ("- a list\n", "top level must be a mapping"),
        ("engine: {engine: fancy}\n", "engine.engine"),
        ("engine: {epochs: 0}\n", "engine.epochs"),
        ("tilling: {grid: [2, 2]}\n", "tilling"),  # a typo is an error, not ignored
        # RNF's position models are refused for an engine that corrects each frame's own
        ("engine: {engine: rpie, learn_positions: local}\n", "not a position model"),
        # engine options are checked against the engine's options classes before any run
        ("engine: {epochs: 1, options: {nonsense_option: 3}}\n",
         "engine.options.nonsense_option: not an option of engine 'rnf'"),
        ("engine: {options: {lr: abc}}\n", "engine.options.lr: expected float; got 'abc'"),
        ("engine: {engine: rpie, options: {batch_size: auto}}\n", "engine.options.batch_size"),
        # settings that need a companion field
        ("cluster: {kind: address}\n", "cluster.address"),
        ("subsample: {method: overlap}\n", "subsample.overlap"),
    ],
)
def test_bad_config_file_is_a_clear_error(tmp_path, data, captured, content, message):
    cfg = tmp_path / "bad.yaml"
    if content is not None:
        cfg.write_text(content)
    res = runner.invoke(app, ["run", str(data), "--out", str(tmp_path / "s.zarr"),
                              "--config", str(cfg)])  # fmt: skip
    assert res.exit_code == 2, res.output
    assert message in res.output and str(cfg) in res.output
    assert "params" not in captured  # nothing ran


def test_yaml_syntax_error_names_file_and_line(tmp_path, data, captured):
    """One loader (flows.params.load_yaml) reads every YAML file: the error is one line
    naming the file, line and column, exit code 2."""
    cfg = tmp_path / "indent.yaml"
    cfg.write_text("engine:\n  epochs: 3\n   seed: 1\n")  # line 3 over-indented
    res = runner.invoke(app, ["run", str(data), "--out", str(tmp_path / "s.zarr"),
                              "--config", str(cfg)])  # fmt: skip
    assert res.exit_code == 2, res.output
    assert f"{cfg}: line 3, column 8: not valid YAML" in res.output
    assert "<unicode string>" not in res.output and "params" not in captured


def test_bad_env_override_and_flags_are_errors(tmp_path, data, captured, monkeypatch):
    out = ["--out", str(tmp_path / "s.zarr")]
    monkeypatch.setenv("PTYFLOW__CLUSTER__KIND", "cloud")
    res = runner.invoke(app, ["run", str(data), *out])
    assert res.exit_code == 2 and "cluster.kind" in res.output
    monkeypatch.delenv("PTYFLOW__CLUSTER__KIND")
    for flags, msg in ((["--keep", "1.5"], "--keep"), (["--grid", "2by2"], "--grid"),
                       (["--grid", "0x2"], "--grid"),
                       (["--engine", "sgd"], "--engine"),
                       (["--cluster", "address"], "cluster.address")):  # fmt: skip
        res = runner.invoke(app, ["run", str(data), *out, *flags])
        assert res.exit_code == 2 and msg in res.output, res.output
    res = runner.invoke(app, ["run", str(tmp_path / "missing.cxi"), *out])
    assert res.exit_code == 2 and "does not exist" in res.output
    res = runner.invoke(app, ["run", str(data)])
    assert res.exit_code == 2 and "store" in res.output
    assert "params" not in captured


@pytest.mark.parametrize("cfg", sorted((REPO / "deployments" / "configs").glob("*.yaml")),
                         ids=lambda p: p.name)  # fmt: skip
def test_shipped_configs_validate(cfg):
    p = PipelineParams.from_yaml(cfg, input="x.cxi", store="x.zarr")
    assert p.engine.engine in ("rnf", "rpie")
    assert yaml.safe_load(cfg.read_text())  # not empty


@pytest.mark.parametrize("model", ["affine", "local", True])
def test_rnf_position_models_from_the_config(tmp_path, data, captured, model):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"engine": {"engine": "rnf", "learn_positions": model}}))
    res = runner.invoke(app, ["run", str(data), "--out", str(tmp_path / "s.zarr"),
                              "--config", str(cfg)])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert captured["params"].engine.settings()["learn_positions"] == model


def test_engine_options_the_engines_take_are_accepted(tmp_path, data, captured):
    """The engines' own sentinels ("auto", "noise"), an int for a float, the generic
    position_search: the load-time check is no stricter than the options classes."""
    cfg = tmp_path / "c.yaml"
    opts = {"lr": 1, "mu": "auto", "batch_size": "auto", "huber_delta": "noise",
            "learn_background": "auto", "hidden_features": 16, "position_search": True}
    cfg.write_text(yaml.safe_dump({"engine": {"engine": "rnf", "options": opts}}))
    res = runner.invoke(app, ["run", str(data), "--out", str(tmp_path / "s.zarr"),
                              "--config", str(cfg)])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert captured["params"].engine.options == opts


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PTYFLOW__ENGINE__EPOCHS", "[", "PTYFLOW__ENGINE__EPOCHS: not valid YAML"),
        ("PTYFLOW__", "1", "PTYFLOW__: names no parameter"),
        # the file has no epochs: the variable is named as the source of the bad value
        ("PTYFLOW__ENGINE__EPOCHS", "abc",
         "PTYFLOW__ENGINE__EPOCHS: invalid configuration: engine.epochs"),
    ],
)
def test_bad_env_override_names_the_variable(tmp_path, data, captured, monkeypatch, name,
                                             value, message):  # fmt: skip
    cfg = tmp_path / "ok.yaml"
    cfg.write_text("engine: {seed: 1}\n")
    monkeypatch.setenv(name, value)
    res = runner.invoke(app, ["run", str(data), "--out", str(tmp_path / "s.zarr"),
                              "--config", str(cfg)])  # fmt: skip
    assert res.exit_code == 2, res.output
    assert message in res.output and str(cfg) not in res.output
    assert "Traceback" not in res.output and "params" not in captured


@pytest.mark.parametrize("engine, options, field", [
    ("learned", {"batch_size": 0}, "batch_size"), ("learned", {"flux": -1.0}, "flux"),
    ("learned", {"precision": "float16"}, "precision"), ("learned", {"model": "cnn"}, "model"),
    ("rnf", {"hidden_layers": 3}, "hidden_layers")])  # fmt: skip
def test_engine_option_values_the_engine_refuses_are_config_errors(engine, options, field):
    """Found when the parameters are read (exit 2), not in a tile after the cluster
    started (the learned engine's batch of 0 failed there as 'range() arg 3 must not be
    zero')."""
    from flows.params import ConfigError

    with pytest.raises(ConfigError, match=field):
        PipelineParams.from_mapping({"input": "x.cxi", "store": "x.zarr",
                                     "engine": {"engine": engine, "options": options}})


def test_a_bad_value_is_blamed_on_the_layer_that_set_it(tmp_path, monkeypatch):
    """A flag's bad value was reported as the YAML file's, and an unknown section set by a
    PTYFLOW__ variable as the command line's."""
    from flows.params import ConfigError

    cfg = tmp_path / "ok.yaml"
    cfg.write_text("engine: {epochs: 5}\n")
    with pytest.raises(ConfigError) as ei:
        PipelineParams.from_yaml(cfg, input="x.cxi", store="x.zarr", engine={"epochs": 0})
    assert str(ei.value).startswith("command line: invalid configuration: engine.epochs")
    monkeypatch.setenv("PTYFLOW__ENGIN__EPOCHS", "3")
    with pytest.raises(ConfigError) as ei:
        PipelineParams.from_yaml(cfg, input="x.cxi", store="x.zarr")
    assert str(ei.value).startswith("PTYFLOW__ENGIN__EPOCHS: invalid configuration: engin")
