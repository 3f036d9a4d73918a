"""The run and node configurations the operator hands to a federated run (no Flower runtime needed)."""

from pathlib import Path

import pytest
from federated_support import run_settings, silo_settings
from flwr.common.config import parse_config_args

from securemodel.workers.federated.contract import (
    RunSettings,
    SettingsError,
    SiloProgress,
    SiloSettings,
    canonical_json,
    config_overrides,
    decode_silos,
    encode_silos,
)


SCHEMA = canonical_json({"label": {"classes": ["no disease", "disease"]}})


@pytest.mark.parametrize(
    "changes",
    [{}, {"evaluation_source": "builtin://breast_cancer?part=evaluation", "silo_sources": ("builtin://breast_cancer?shard=0&of=3", "builtin://breast_cancer?shard=1&of=3")},
     {"evaluation_source": "pvc://c/public.npz", "evaluation_samples": 100, "evaluation_root": Path("/eval"),
      "silo_sources": ("pvc://c/private.npz",), "data_schema": SCHEMA}],
)  # fmt: skip
def test_run_settings_survive_the_run_configuration(changes: dict[str, object]) -> None:
    settings = run_settings(**changes)
    assert RunSettings.from_config(settings.to_config()) == settings


def test_an_evaluation_source_needs_the_silos_sources() -> None:
    with pytest.raises(SettingsError, match="needs the silos' sources"):
        run_settings(evaluation_source="builtin://breast_cancer?part=evaluation")


@pytest.mark.parametrize("changes", [{}, {"data_source": "pvc://c/private.npz", "data_samples": 300,
                                          "data_schema": SCHEMA}])  # fmt: skip
def test_silo_settings_survive_flowers_node_config_parser(changes: dict[str, object]) -> None:
    """What fl-client passes as --node-config, parsed the way flower-supernode parses it."""
    settings = silo_settings(**changes)
    parsed = parse_config_args([config_overrides(settings.to_config())])
    assert SiloSettings.from_config(parsed) == settings


def test_silos_encode_node_ids_and_names() -> None:
    silos = {7: "b", 3: "a"}
    assert encode_silos(silos) == "a=3,b=7"
    assert decode_silos("a=3,b=7") == silos
    with pytest.raises(SettingsError):
        decode_silos("a=x")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"threshold": 1}, "threshold 1 must be >= 2"),
        ({"threshold": 3, "min_clients": 2}, "<= min-clients 2"),
        ({"silos": {1: "a", 2: "b", 3: "c", 4: "d"}, "threshold": 2}, "above half of the 4 shares"),
        ({"min_clients": 4}, "exceeds the 3 silos"),
    ],
)
def test_run_settings_refuse_an_unsafe_secure_aggregation(changes: dict[str, object], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        run_settings(**changes)


def test_a_missing_or_mistyped_key_is_named() -> None:
    config = run_settings().to_config()
    del config["rounds"]
    with pytest.raises(SettingsError, match="'rounds' is missing"):
        RunSettings.from_config(config)
    with pytest.raises(SettingsError, match="'rounds' must be int"):
        RunSettings.from_config({**run_settings().to_config(), "rounds": "2"})


def test_node_config_values_flowers_parser_cannot_read_back_are_refused() -> None:
    with pytest.raises(SettingsError, match="both kinds of quotes"):
        config_overrides({"data-schema": """{"label": "it's"}"""})
    with pytest.raises(SettingsError, match="span lines"):
        config_overrides({"data-source": "a\nb"})


def test_progress_starts_empty_and_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "progress.json"
    assert SiloProgress.read(path) == SiloProgress(0, 0)
    SiloProgress(1, 9).write(path)
    assert SiloProgress.read(path) == SiloProgress(1, 9)
    assert [p.name for p in tmp_path.iterdir()] == ["progress.json"]
