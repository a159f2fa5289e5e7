"""Typed parameters of every flow: the Prefect UI renders them as forms, the CLI loads them
from YAML (``PipelineParams.from_yaml``), and ``PTYFLOW__...`` environment variables
override single fields (``PTYFLOW__ENGINE__EPOCHS=20``)."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import types
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, Union, get_args, get_origin, get_type_hints

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from flows.config_sources import (  # noqa: F401 - ConfigError, load_yaml: flows' names
    ConfigError,
    deep_merge,
    env_variables,
    has_path,
    load_yaml,
    nested,
    sets,
)
from ptytasks.engines.registry import (  # one list
    DEFAULT_ENGINE,
    ENGINES,
    GENERIC_SETTINGS,
    PRIOR_ENGINES,
    SPECS,
    check_position_model,
    engine_defaults,
    option_classes,
    option_names,
)


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _invalid(field: str, message: str, value) -> NoReturn:
    """Raise, from a model validator, the error of the model's ``field`` (dotted path): the
    configuration error then names that field (``cluster.address: ...``), not the model."""
    loc = tuple(field.split("."))
    raise ValidationError.from_exception_data("invalid field", [InitErrorDetails(
        type=PydanticCustomError("invalid_field", message), loc=loc, input=value)])  # fmt: skip


# Upper bounds keep a typo or a planted file from asking for days of compute or thousands
# of processes; they sit far above any real run (RNF paper: 50 epochs; PIE: a few hundred).
MAX_EPOCHS = 10_000
_GridSide = Annotated[int, Field(ge=1, le=256)]  # 256 x 256 tiles: beyond any gigapixel run


class IngestParams(_Params):
    """Reading the raw dataset into the run store (format chosen by extension/content)."""

    z1: float | None = Field(
        None,
        description="Focus-to-sample distance in metres (cone-beam near-field data).",
        gt=0,
        le=10,
    )
    options: dict[str, bool | int | float | str | None] = Field(
        default_factory=dict,
        description="Further reader options, e.g. step_size for 4D-STEM (see storage.readers).",
    )
    detector_artefacts: bool = Field(
        True,
        description="Pixel-detector data (far and near field): leave out of every engine's "
        "fit the split wide pixels of chip boundaries (adjacent lines within one count in "
        "every frame) and hot pixels found in the frames, beside the file's own bad-pixel "
        "mask (ptytasks.detector; what was found: the raw step's detector_artefacts "
        "attribute).",
    )

    def reader_options(self) -> dict:
        return {**self.options, **({"z1": self.z1} if self.z1 is not None else {})}


class SubsampleParams(_Params):
    """Sparse-scan selection; the kept indices are stored with every result."""

    method: Literal["all", "fraction", "stride", "overlap"] = Field(
        "all", description="all frames, a random fraction, a raster stride, or a target overlap"
    )
    fraction: float = Field(1.0, gt=0, le=1, description="Fraction of frames kept ('fraction').")
    stride: int = Field(
        1, ge=1, le=64, description="Keep every n-th raster row and column ('stride')."
    )
    overlap: float | None = Field(
        None, ge=0, lt=1, description="Target linear overlap of kept positions ('overlap')."
    )
    seed: int = Field(0, description="Random seed of the selection.")

    @model_validator(mode="after")
    def _overlap_for_method_overlap(self):
        if self.method == "overlap" and self.overlap is None:
            _invalid("overlap", "method 'overlap' needs the target overlap, a number in [0, 1)",
                     None)  # fmt: skip
        return self


class CalibrationParams(_Params):
    """Priors the engines start from (and the RNF residuals are learned on top of)."""

    probe: Literal["data", "mean_pattern", "physical"] = Field(
        "data",
        description="'data': the dataset's probe if it has one, else the mean-pattern "
        "estimate; 'mean_pattern': always the estimate from the frames (far field: the mean "
        "pattern's aperture with the defocus that best predicts held-out frames, "
        "ptytasks.probe_estimate; near field: a phase-only-object ePIE on a trial set); "
        "'physical': from the beam parameters (electron aperture + defocus, or X-ray zone "
        "plate).",
    )
    object: Literal[("uniform", *PRIOR_ENGINES)] = Field(
        "uniform",
        description="Object prior: uniform, a quick ePIE/rPIE/PINE run, or single-shot network "
        "inversion ('learned', far-field frames of the trained size).",
    )
    prior_iterations: int = Field(
        10, ge=1, le=MAX_EPOCHS, description="Iterations of the quick prior run."
    )
    learned_weights: str = Field(
        "default",
        description="Weights of the 'learned' prior: a committed set ('default': 0.35 N zone "
        "plate, generic objects; 'layout': window-filling probe, IC-like layouts) or a file.",
    )
    pupil_file: str | None = Field(
        None,
        description="Fourier ptychography: a measured pupil (.mat with 'aberration', or .npy) "
        "whose Zernike fit seeds the pupil prior.",
    )
    pupil_wavelength: float | None = Field(
        None,
        gt=0,
        le=1e-3,
        description="Wavelength of the measured pupil, metres (default: the data's).",
    )
    surface_reference: str | None = Field(
        None,
        description="Coded ptychography: a dataset of a known reference specimen (its ground "
        "truth object, else blank) from which the coded surface is calibrated.",
    )


class TilingParams(_Params):
    """How the field is split into independent reconstruction tasks."""

    grid: tuple[_GridSide, _GridSide] = Field((1, 1), description="Tiles along (y, x).")
    margin: float | None = Field(
        None,
        ge=0,
        le=4096,
        description="Overlap margin: probe widths (scanning modalities) or detector pixels "
        "(coded, Fourier). Default per modality.",
    )
    guard: int | None = Field(
        None,
        ge=0,
        le=4096,
        description="Coded and Fourier: detector pixels at each tile-crop edge whose "
        "measurements are not enforced (light crossing the crop edge, which the periodic "
        "model wraps round; Fourier: the camera field's edge too). Default half the margin.",
    )


_LATER_DEFAULTS = {"n_slices": 1, "slice_thickness": None}


class EngineParams(_Params):
    """The reconstruction engine and its main settings."""

    # Checked against the registry when validated (so an engine registered after import,
    # a plug-in, is accepted); the UI form lists the engines known at import.
    engine: str = Field(
        DEFAULT_ENGINE,
        json_schema_extra={"enum": list(ENGINES)},
        description="Reconstruction engine: "
        + "; ".join(f"'{n}' {SPECS[n].summary}" for n in ENGINES) + ".",
    )
    epochs: int = Field(50, ge=1, le=MAX_EPOCHS, description="Epochs (RNF) or iterations (PIE).")
    batch_size: int | None = Field(
        None, ge=1, le=65536, description="Frames per update (default: the engine's own)."
    )
    learn_positions: bool | Literal["affine", "local"] = Field(
        False, description="Correct scan positions jointly: true (each frame's own, every "
        "engine); RNF also 'affine' (one map of the whole scan: scale, shear, rotation) or "
        "'local' (each frame's own without the scan's affine part)."
    )
    learn_probe: bool = Field(True, description="Update the probe (or pupil).")
    alpha: float | None = Field(None, gt=0, le=1, description="PIE object step (rPIE alpha).")
    beta: float | None = Field(None, gt=0, le=1, description="PIE probe step.")
    mu: float | None = Field(
        None, ge=0, le=1e3, description="RNF wavelet-sparsity weight (default: the "
        "engine's rule, the paper's 0.1 except with low counts: docs/rnf.md)."
    )
    loss: Literal["smooth_l1", "huber", "l1", "l2", "gradient", "poisson"] | None = Field(
        None, description="RNF data term (default: the engine's own)."
    )
    probe_modes: int = Field(
        1, ge=1, le=16, description="Incoherent probe modes (mixed state; scanning data, "
        "engines rnf, epie, rpie, pine). A file's stored modes are used as the start."
    )
    n_slices: int = Field(
        1, ge=1, le=64, description="Object slices (multislice: a thick specimen; scanning "
        "data, engines rnf, epie, rpie). Needs slice_thickness or the file's "
        "params.slice_distance."
    )
    slice_thickness: float | None = Field(
        None, gt=0, le=1e-3, description="Distance between object slices, metres (default: "
        "the file's params.slice_distance)."
    )
    seed: int = Field(0, description="Seed for initialisation and frame order.")
    options: dict[str, float | int | str | bool] = Field(
        default_factory=dict, description="Further engine options by name (expert use)."
    )

    @model_serializer(mode="wrap")
    def _without_unused_later_fields(self, handler):
        # Fields added after stores and facility ledgers were written are left out while
        # at their defaults: those runs keep their fingerprints (and are not redone).
        out = handler(self)
        for k, default in _LATER_DEFAULTS.items():
            if out.get(k, default) == default:
                out.pop(k, None)
        return out

    @field_validator("engine")
    @classmethod
    def _registered(cls, v: str) -> str:
        from ptytasks.engines.registry import get

        get(v)  # ValueError naming the registered engines
        return v

    @model_validator(mode="after")
    def _position_model_of_the_engine(self):
        # "affine" / "local" are fields of an engine's own options (RNF's); the others
        # correct each frame's position, so say so before any tile runs
        check_position_model(self.engine, self.learn_positions)
        return self

    @model_validator(mode="after")
    def _main_settings_of_the_engine(self):
        # a main setting the engine has no field for was dropped without a word (alpha with
        # RNF, mu with the PIE engines, probe_modes with 'learned') while still changing the
        # tiles' keys; its default (None, or 1 mode / 1 slice) asks for nothing: fine
        known = option_names(self.engine)
        for name in ("batch_size", "mu", "loss", "alpha", "beta", "probe_modes", "n_slices"):
            value = getattr(self, name)
            if value != type(self).model_fields[name].default and name not in known:
                _invalid(name, f"engine {self.engine!r} has no setting {name}; remove it",
                         value)
        if self.slice_thickness is not None and self.n_slices == 1:  # spaces no slices
            _invalid("slice_thickness", "is the spacing of engine.n_slices > 1 slices (n_slices "
                     "is 1); set n_slices or remove it", self.slice_thickness)
        return self

    @model_validator(mode="after")
    def _options_of_the_engine(self):
        # an unknown or mistyped option is found here, not inside the run (where the
        # engine's options class refuses it after the earlier steps ran)
        known = option_names(self.engine) | set(GENERIC_SETTINGS)
        types_of = _option_types(self.engine)
        for name, value in self.options.items():
            where = f"options.{name}"
            if name in ("epochs", "iterations"):  # one count: the one progress reads
                _invalid(where, "is set by engine.epochs (--epochs); set it there", value)
            if name not in known:
                near = difflib.get_close_matches(name, sorted(known), n=1)
                hint = f"; did you mean {near[0]!r}?" if near else ""
                _invalid(where, f"not an option of engine {self.engine!r}{hint}", value)
            # a generic setting that is no field of the engine's options: the type of the
            # main setting of that name (epochs, learn_positions, ...), if there is one
            main = type(self).model_fields.get(name)
            accepted = types_of.get(name) or ([main.annotation] if main else [Any])
            if not any(_accepts(tp, value) for tp in accepted):
                expected = " or ".join(dict.fromkeys(_type_text(tp) for tp in accepted))
                _invalid(where, f"expected {expected}; got {value!r}", value)
        # values the options class refuses (a batch of 0, a negative flux) are found here
        # too, not in a tile after the cluster started
        from ptytasks.engines.registry import option_classes

        for cls in option_classes(self.engine):
            given = {k: v for k, v in self.options.items() if k in cls.field_names()}
            try:
                cls(**given)
            except (ValueError, TypeError) as exc:
                _invalid("options", str(exc), given)
        return self

    def settings(self) -> dict:
        """The settings dict of :func:`ptytasks.engines.registry.run_engine`."""
        s = {"epochs": self.epochs, "learn_positions": self.learn_positions,
             "learn_probe": self.learn_probe, "seed": self.seed}  # fmt: skip
        # the main settings an engine has no field for are unset (refused above otherwise)
        per_engine = {"batch_size": self.batch_size, "mu": self.mu, "loss": self.loss,
                      "alpha": self.alpha, "beta": self.beta}  # fmt: skip
        if self.probe_modes != 1:
            per_engine["probe_modes"] = self.probe_modes
        if self.n_slices != 1:
            per_engine["n_slices"] = self.n_slices
        known = option_names(self.engine)
        s.update({k: v for k, v in per_engine.items() if v is not None and k in known})
        s.update(self.options)
        return s

    def key(self) -> dict:
        """What a tile's step key hashes: these parameters and the engine's defaults (a
        changed default must not let a store serve tiles computed under the old one)."""
        key = {**self.model_dump(), "engine_defaults": engine_defaults(self.engine)}
        if self.options.get("position_search"):
            # the search's own defaults, only where it runs (other keys stay as they were)
            from dataclasses import asdict

            from ptytasks.engines.position_search import PositionSearchOptions

            key["position_search_defaults"] = asdict(PositionSearchOptions())
        if "position_correction" in option_names(self.engine) and (
                self.learn_positions or self.options.get("position_correction")):
            # the refinement's defaults run (learn_positions: true, or true / a partial
            # mapping as the option): a changed default must not serve old tiles
            from dataclasses import asdict

            from ptytasks.engines.options import PositionCorrectionOptions

            key["position_correction_defaults"] = asdict(PositionCorrectionOptions())
        return key


def _option_types(engine: str) -> dict[str, list]:
    """The annotation of each option of ``engine``, one per options class that has it."""
    out: dict[str, list] = {}
    for cls in sorted(option_classes(engine), key=str):
        for name, tp in _field_types(cls).items():
            out.setdefault(name, []).append(tp)
    return out


@functools.cache
def _field_types(cls) -> dict[str, Any]:
    """An options dataclass's fields and their annotations (``Any`` where they cannot be
    resolved: such an option is not type-checked)."""
    try:
        hints = get_type_hints(cls)
    except Exception:  # noqa: BLE001 - a plug-in's unresolvable annotation: not checked
        hints = {}
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls)}


def _accepts(tp, value) -> bool:
    """Whether an option annotated ``tp`` takes ``value`` as the engine would: simple types
    are checked (an int is a float), others (tuples, nested options) left to the engine."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return any(_accepts(t, value) for t in get_args(tp))
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in get_args(tp))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp in (int, float):
        return isinstance(value, (int, tp)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    return True


def _type_text(tp) -> str:
    """``tp`` as the error names it: ``float or 'auto'``, ``int or null``."""
    if get_origin(tp) in (Union, types.UnionType):
        return " or ".join(_type_text(t) for t in get_args(tp))
    if get_origin(tp) is Literal:
        return " or ".join(repr(a) for a in get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


class EvaluationParams(_Params):
    """Quality metrics of the stitched result."""

    threshold: Literal["halfbit", "1/7"] = Field("halfbit", description="FRC threshold.")
    half_data: bool = Field(
        False,
        description="Also reconstruct two interleaved halves of the data for a half-data FRC "
        "(always done when the dataset has no ground truth and this is set).",
    )


class ClusterParams(_Params):
    """Where the tiles run."""

    kind: Literal["local", "local_cuda", "address", "none"] = Field(
        "local",
        description="'local': a CPU distributed.LocalCluster; 'local_cuda': dask_cuda's "
        "LocalCUDACluster (gpu extra); 'address': an existing scheduler; 'none': in-process.",
    )
    address: str | None = Field(None, description="Scheduler address for kind='address'.")
    n_workers: int | None = Field(None, ge=1, le=1024, description="Workers (default: by "
                                  "machine; local_cuda: one per visible GPU). Not used by "
                                  "kind 'none' (in-process).")
    threads_per_worker: int | None = Field(None, ge=1, le=256, description="Threads per worker.")
    torch_threads: int | None = Field(None, ge=1, le=256, description="torch threads per worker.")

    @model_validator(mode="after")
    def _address_for_kind_address(self):
        if self.kind == "address" and not self.address:
            _invalid("address", "kind 'address' needs the scheduler's address, e.g. "
                     "tcp://host:8786", self.address)  # fmt: skip
        if self.address and self.kind != "address":  # else the run would go local, silently
            _invalid("address", f"is used only with kind 'address' (kind is {self.kind!r}): "
                     "set cluster.kind to 'address' (--cluster address)", self.address)
        for name in ("n_workers", "threads_per_worker"):  # the existing cluster's own count
            if self.kind == "address" and (value := getattr(self, name)) is not None:
                _invalid(name, f"is not used with kind 'address': the cluster at "
                         f"cluster.address {self.address} has its own workers; remove it",
                         value)  # fmt: skip
        return self


class PipelineParams(_Params):
    """The whole pipeline: ingest -> subsample -> calibrate -> reconstruct -> stitch -> eval."""

    input: str = Field(..., description="Raw dataset (any format the readers take).")
    store: str = Field(..., description="Run store path (a Zarr v3 directory).")
    ingest: IngestParams = Field(default_factory=IngestParams)
    subsample: SubsampleParams = Field(default_factory=SubsampleParams)
    calibration: CalibrationParams = Field(default_factory=CalibrationParams)
    tiling: TilingParams = Field(default_factory=TilingParams)
    engine: EngineParams = Field(default_factory=EngineParams)
    evaluation: EvaluationParams = Field(default_factory=EvaluationParams)
    cluster: ClusterParams = Field(default_factory=ClusterParams)

    def with_absolute_paths(self) -> PipelineParams:
        """These parameters with their file paths absolute: tiles run on Dask workers
        whose working directory may be another (a batch job's; a relative store there made
        a new, empty store)."""
        cal = self.calibration
        files = {k: os.path.abspath(v) for k in ("pupil_file", "surface_reference")
                 if (v := getattr(cal, k)) is not None}  # fmt: skip
        return self.model_copy(update={
            "input": os.path.abspath(self.input), "store": os.path.abspath(self.store),
            "calibration": cal.model_copy(update=files)})

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides) -> PipelineParams:
        """Load from a YAML file, then apply ``PTYFLOW__A__B`` env vars and ``overrides``.

        Raises
        ------
        ConfigError
            Missing, unreadable or invalid file (naming the file and the field).
        """
        return cls.from_mapping(load_yaml(path), source=str(path), **overrides)

    @classmethod
    def from_mapping(cls, raw: dict, *, source: str = "parameters",
                     overrides_source: str = "command line", **overrides) -> PipelineParams:
        """Validate a mapping with env-var and keyword overrides applied on top.

        Raises
        ------
        ConfigError
            Naming where each bad value came from: ``source``, the ``PTYFLOW__`` variable
            that set it, or ``overrides_source`` (the keyword overrides: a command's flags),
            and the field.
        """
        env = env_variables()
        merged = deep_merge(deep_merge(dict(raw), nested(env)), overrides)
        try:
            return cls.model_validate(merged)
        except ValidationError as exc:
            by_origin: dict[str, list[str]] = {}
            for e in exc.errors():
                loc = tuple(str(p) for p in e["loc"])
                # an unknown key (a whole section, say) comes from the layer that holds it
                gives = has_path if e["type"] == "extra_forbidden" else sets
                # the last layer that set the value: keyword overrides, then the variables
                origin = overrides_source if gives(overrides, loc) else next(
                    (var for var, path, value in env if gives(nested([(var, path, value)]), loc)),
                    source)  # fmt: skip
                by_origin.setdefault(origin, []).append(f"{'.'.join(loc)}: {e['msg']}")
            raise ConfigError("; ".join(f"{origin}: invalid configuration: {'; '.join(fields)}"
                                        for origin, fields in by_origin.items())) from None
