"""The settings the operator hands to a federated run and the result it reads back (no torch, no flwr).

Two configurations reach the apps, from two different parties:

- the **run configuration** (:class:`RunSettings`), which the aggregator submits with the run;
  every ClientApp sees it too, so it holds nothing secret and nothing a silo must trust;
- the **node configuration** (:class:`SiloSettings`), which the operator sets on one silo's
  SuperNode (``--node-config``). It alone fixes that silo's DP-SGD mechanism: the aggregator
  cannot make a silo train longer, with less noise or on other data than its own pod says.

The result (:data:`RESULT_FILE` in the output directory, rewritten after every round, and the
``fl-aggregate`` termination message) is JSON::

    {"kind": "FederatedResult", "status": "Running" | "Succeeded" | "Failed",
     "error": "...",                                  # only when Failed
     "roundsCompleted": k, "rounds": R,
     "evaluationSource": "builtin://breast_cancer?part=evaluation", "evaluationExamples": 113,
     "accuracy": 0.93, "digest": "sha256:...", "artifact": "/out/round-001.model",   # latest round
     "history": [{"round": 1, "submitted": ["clinic-a", ...], "dropped": ["clinic-c"],
                  "accuracy": 0.93, "digest": "sha256:...", "seconds": 12.3}],
     "silos": {"clinic-a": {"roundsSubmitted": 1, "steps": 9}}}

Every ``accuracy`` is the global model's, measured by the ServerApp on ALL of the public
evaluation source (``evaluation-source``, which the round's spec declares public); without one
the result holds no accuracy and no ``evaluation*`` key. No silo evaluates anything: nothing
computed from a silo's private data but its DP-SGD updates (and its number of training examples,
FedAvg's weight) leaves its pod.

``steps`` per silo is what its ClientApp reported for the rounds whose update reached the
aggregate; the silo's own ``fl-client`` report (:class:`SiloReport`) also counts steps of an
update that was lost, and is what a budget must be settled from.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

ConfigValue = bool | int | float | str
RESULT_FILE: Final[str] = "result.json"
# How long a replaced file must be seen missing before its absence is believed, and how often it is looked for.
ABSENCE_PATIENCE: Final[float] = 0.5
ABSENCE_LOOK_INTERVAL: Final[float] = 0.01
RESULT_KIND: Final[str] = "FederatedResult"
SILO_REPORT_KIND: Final[str] = "FederatedSiloResult"
# Flower reports usage telemetry and checks for updates over the internet unless told not to. Its SuperExec
# (which starts the ServerApp and each silo's ClientApp) looks for a new task every second unless told otherwise.
FLOWER_SWITCHES: Final[dict[str, str]] = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.2",
}


def flower_environment(**extra: str) -> dict[str, str]:
    """The environment of every Flower process the workers start: no telemetry, no update check,
    and this interpreter's ``bin`` first on ``PATH`` (Flower starts ``flower-superexec`` and the
    app runners by name)."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, **FLOWER_SWITCHES, "PATH": path, **extra}


class SettingsError(ValueError):
    """A run or node configuration is missing a key or holds a value of the wrong type."""


def _get(config: Mapping[str, ConfigValue], key: str, kind: type, default: Any = None) -> Any:
    if key not in config:
        if default is None:
            raise SettingsError(f"configuration key {key!r} is missing")
        return default
    value = config[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise SettingsError(f"configuration key {key!r} must be {kind.__name__}, got {value!r}")
    return value


def encode_silos(silos: Mapping[int, str]) -> str:
    """``{node_id: silo}`` as the run-config string ``"name=node_id,..."``."""
    return ",".join(f"{name}={node_id}" for node_id, name in sorted(silos.items(), key=lambda item: item[1]))


def decode_silos(text: str) -> dict[int, str]:
    """Inverse of :func:`encode_silos`."""
    silos: dict[int, str] = {}
    for item in filter(None, text.split(",")):
        name, _, node_id = item.partition("=")
        if not name or not node_id.isdigit():
            raise SettingsError(f"silo entry {item!r} is not name=node_id")
        silos[int(node_id)] = name
    if not silos:
        raise SettingsError("the run names no silos")
    return silos


@dataclass(frozen=True)
class RunSettings:
    """The run configuration: what the ServerApp does, and the optimizer all silos share."""

    silos: dict[int, str]  # Flower node id -> silo name, from the SuperLink's registration
    rounds: int
    min_clients: int
    secure_aggregation: bool
    num_shares: int  # SecAgg+ shares per key; the number of sampled silos when 0
    threshold: int  # SecAgg+ reconstruction threshold
    max_weight: int  # SecAgg+ largest weight (number of a silo's training examples)
    round_uid: str  # metadata.uid of the FederatedRound: every global model is bound to it and its round number
    initial_model: Path  # encrypted model artifact the federation starts from
    initial_model_key_file: Path
    # What the initial model must be bound to (round_binding): the previous round's uid and final round
    # number, or this round's uid and 0 for the starting model its aggregator built.
    initial_round_uid: str
    initial_round: int
    key_file: Path  # the round's data key: encrypts the global model artifacts
    output_dir: Path
    learning_rate: float
    optimizer: str
    stage_timeout: float  # seconds to wait for the silos' replies in each protocol stage
    # The public evaluation source ("": none, then no accuracy is measured), its declared size for
    # a pvc:// file, where its volume is mounted, and the silos' sources it must be kept apart from.
    evaluation_source: str = ""
    evaluation_samples: int = 0
    evaluation_root: Path = Path("/data")
    silo_sources: tuple[str, ...] = ()
    data_schema: str = ""  # the silos' spec.data.schema as JSON ("": none), to encode a pvc:// evaluation file

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.min_clients < 1:
            raise SettingsError("rounds and min-clients must be >= 1")
        if self.initial_round < 0:
            raise SettingsError("initial-round must be >= 0")
        if self.evaluation_source and not self.silo_sources:
            raise SettingsError("an evaluation source needs the silos' sources, to be checked apart from them")
        if any("," in source for source in self.silo_sources):
            raise SettingsError("a silo source may not contain ','")
        if self.min_clients > len(self.silos):
            raise SettingsError(f"min-clients {self.min_clients} exceeds the {len(self.silos)} silos")
        if self.secure_aggregation:
            if not 2 <= self.threshold <= self.min_clients:
                raise SettingsError(f"threshold {self.threshold} must be >= 2 and <= min-clients {self.min_clients}")
            shares = self.num_shares or len(self.silos)
            if 2 * self.threshold <= shares or shares > len(self.silos):
                raise SettingsError(
                    f"threshold {self.threshold} must be above half of the {shares} shares, "
                    f"which may not exceed the {len(self.silos)} silos"
                )

    @classmethod
    def from_config(cls, config: Mapping[str, ConfigValue]) -> RunSettings:
        """Parse Flower's run configuration (``context.run_config``)."""
        return cls(
            silos=decode_silos(_get(config, "silos", str)),
            rounds=_get(config, "rounds", int),
            min_clients=_get(config, "min-clients", int),
            secure_aggregation=_get(config, "secure-aggregation", bool),
            num_shares=_get(config, "num-shares", int, 0),
            threshold=_get(config, "threshold", int, 0),
            max_weight=_get(config, "max-weight", int, 1000),
            round_uid=_get(config, "round-uid", str),
            initial_model=Path(_get(config, "initial-model", str)),
            initial_model_key_file=Path(_get(config, "initial-model-key-file", str)),
            initial_round_uid=_get(config, "initial-round-uid", str),
            initial_round=_get(config, "initial-round", int),
            key_file=Path(_get(config, "key-file", str)),
            output_dir=Path(_get(config, "output-dir", str)),
            learning_rate=_get(config, "learning-rate", float),
            optimizer=_get(config, "optimizer", str, "sgd"),
            stage_timeout=_get(config, "stage-timeout", float, 300.0),
            evaluation_source=_get(config, "evaluation-source", str, ""),
            evaluation_samples=_get(config, "evaluation-samples", int, 0),
            evaluation_root=Path(_get(config, "evaluation-root", str, "/data")),
            silo_sources=tuple(filter(None, _get(config, "silo-sources", str, "").split(","))),
            data_schema=_get(config, "data-schema", str, ""),
        )

    def to_config(self) -> dict[str, ConfigValue]:
        """The run configuration as ``flwr run --run-config`` takes it (see :func:`config_overrides`)."""
        return {
            "silos": encode_silos(self.silos),
            "rounds": self.rounds,
            "min-clients": self.min_clients,
            "secure-aggregation": self.secure_aggregation,
            "num-shares": self.num_shares,
            "threshold": self.threshold,
            "max-weight": self.max_weight,
            "round-uid": self.round_uid,
            "initial-model": str(self.initial_model),
            "initial-model-key-file": str(self.initial_model_key_file),
            "initial-round-uid": self.initial_round_uid,
            "initial-round": self.initial_round,
            "key-file": str(self.key_file),
            "output-dir": str(self.output_dir),
            "learning-rate": self.learning_rate,
            "optimizer": self.optimizer,
            "stage-timeout": self.stage_timeout,
            "evaluation-source": self.evaluation_source,
            "evaluation-samples": self.evaluation_samples,
            "evaluation-root": str(self.evaluation_root),
            "silo-sources": ",".join(self.silo_sources),
            "data-schema": self.data_schema,
        }


@dataclass(frozen=True)
class SiloSettings:
    """One silo's node configuration: its data and the DP-SGD mechanism the operator calibrated for it."""

    silo: str
    data_source: str
    data_samples: int | None  # spec.data.samples of a pvc:// source
    data_root: Path
    noise_multiplier: float
    sample_rate: float
    steps_per_round: int
    rounds: int  # rounds the silo's ε was calibrated for: it trains in no more
    max_grad_norm: float
    progress_file: Path  # survives the ClientApp processes: rounds trained and steps run
    secure_aggregation: bool  # the silo submits updates only under SecAgg+
    data_schema: str = ""  # spec.data.schema as JSON ("": none; required by a pvc:// source)

    def __post_init__(self) -> None:
        if not self.noise_multiplier > 0 or not 0 < self.sample_rate <= 1 or not self.max_grad_norm > 0:
            raise SettingsError("noise-multiplier and max-grad-norm must be > 0, sample-rate in (0, 1]")
        if self.steps_per_round < 1 or self.rounds < 1:
            raise SettingsError("steps-per-round and rounds must be >= 1")

    @classmethod
    def from_config(cls, config: Mapping[str, ConfigValue]) -> SiloSettings:
        """Parse Flower's node configuration (``context.node_config``)."""
        samples = _get(config, "data-samples", int, 0)
        return cls(
            silo=_get(config, "silo", str),
            data_source=_get(config, "data-source", str),
            data_samples=samples or None,
            data_root=Path(_get(config, "data-root", str, "/data")),
            noise_multiplier=_get(config, "noise-multiplier", float),
            sample_rate=_get(config, "sample-rate", float),
            steps_per_round=_get(config, "steps-per-round", int),
            rounds=_get(config, "rounds", int),
            max_grad_norm=_get(config, "max-grad-norm", float),
            progress_file=Path(_get(config, "progress-file", str)),
            secure_aggregation=_get(config, "secure-aggregation", bool, True),
            data_schema=_get(config, "data-schema", str, ""),
        )

    def to_config(self) -> dict[str, ConfigValue]:
        """The node configuration for ``flower-supernode --node-config`` (see :func:`config_overrides`)."""
        return {
            "silo": self.silo,
            "data-source": self.data_source,
            "data-samples": self.data_samples or 0,
            "data-root": str(self.data_root),
            "noise-multiplier": self.noise_multiplier,
            "sample-rate": self.sample_rate,
            "steps-per-round": self.steps_per_round,
            "rounds": self.rounds,
            "max-grad-norm": self.max_grad_norm,
            "progress-file": str(self.progress_file),
            "secure-aggregation": self.secure_aggregation,
            "data-schema": self.data_schema,
        }


def canonical_json(value: Mapping[str, Any] | None) -> str:
    """``value`` as compact JSON with sorted keys (a config value); "" for None."""
    return "" if value is None else json.dumps(value, sort_keys=True, separators=(",", ":"))


def config_overrides(config: Mapping[str, ConfigValue]) -> str:
    """``key=value`` pairs, space separated, as Flower's ``--run-config`` and ``--node-config`` parse them (TOML values).

    A string is a TOML basic string ``"..."``, or a literal string ``'...'`` when it holds ``"`` or
    a backslash (JSON); one that fits neither is refused.
    """
    parts = []
    for key, value in config.items():
        if isinstance(value, bool):
            rendered = "true" if value else "false"
        elif isinstance(value, str):
            if "\n" in value or "\r" in value:
                raise SettingsError(f"value of {key!r} may not span lines")
            if '"' not in value and "\\" not in value:
                rendered = f'"{value}"'
            elif "'" not in value:
                rendered = f"'{value}'"
            else:
                raise SettingsError(f"value of {key!r} may not hold both kinds of quotes")
        else:
            rendered = repr(value)
        parts.append(f"{key}={rendered}")
    return " ".join(parts)


@dataclass(frozen=True)
class SiloProgress:
    """What a silo has spent so far in this round's runs: kept in its progress file."""

    rounds_trained: int = 0
    steps: int = 0

    @classmethod
    def read(cls, path: Path) -> SiloProgress:
        """The progress in ``path``; nothing spent only when the file does not exist yet.

        Guarantee: a file that exists is never read as "nothing spent", even while another process
        replaces it (:func:`read_replaced_json`), so a silo cannot be let train a round more than its
        ε was calibrated for.
        """
        data = read_replaced_json(path)
        if data is None:
            return cls()
        return cls(int(data["roundsTrained"]), int(data["steps"]))

    def write(self, path: Path) -> None:
        """Replace ``path`` atomically."""
        replace_json(path, {"roundsTrained": self.rounds_trained, "steps": self.steps})


def write_result(output_dir: Path, result: Mapping[str, Any]) -> None:
    """Replace :data:`RESULT_FILE` in ``output_dir`` atomically."""
    replace_json(output_dir / RESULT_FILE, result)


def read_result(output_dir: Path, patience: float = ABSENCE_PATIENCE) -> dict[str, Any] | None:
    """The last result the ServerApp wrote, or None if it wrote none (or, with ``patience`` 0, if
    one look did not find it: enough for a hint that is read again)."""
    return read_replaced_json(output_dir / RESULT_FILE, patience)


def replace_json(path: Path, document: Any) -> None:
    """Write ``document`` to ``path`` by writing a temporary file beside it and renaming it over ``path``:
    a reader sees the old document or the new one, never a part (read it with :func:`read_replaced_json`)."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(document, sort_keys=True, allow_nan=False))
    temporary.replace(path)


def read_replaced_json(path: Path, patience: float = ABSENCE_PATIENCE) -> Any:
    """The JSON in ``path``, a file only ever written by :func:`replace_json`; None if it does not exist.

    The rename is atomic on the backing file system, but the reader is another process, and on a
    FUSE view of a volume (the local cluster's bindfs) or a network file system a look that races
    a rename can find the path missing, or find it and then fail to open it, although it never was
    missing. So an absence is believed only once every look over ``patience`` seconds found none.
    """
    deadline = time.monotonic() + patience
    while True:
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            if time.monotonic() >= deadline:
                return None
        time.sleep(ABSENCE_LOOK_INTERVAL)
