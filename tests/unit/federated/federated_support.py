"""Settings the federated tests start from."""

from pathlib import Path

from securemodel.workers.federated.contract import RunSettings, SiloSettings


def run_settings(**changes: object) -> RunSettings:
    values: dict[str, object] = {
        "silos": {11: "clinic-a", 22: "clinic-b", 33: "clinic-c"},
        "rounds": 2,
        "min_clients": 2,
        "secure_aggregation": True,
        "num_shares": 0,
        "threshold": 2,
        "max_weight": 200,
        "round_uid": "5f0c2a1e-7b3d-4e8a-9c61-2d4b8e0f1a37",
        "initial_model": Path("/in/model"),
        "initial_model_key_file": Path("/in/key"),
        "initial_round_uid": "9a1d3c5e-0b2f-4a6c-8e1d-3f5a7c9e0b24",
        "initial_round": 3,
        "key_file": Path("/keys/round"),
        "output_dir": Path("/out"),
        "learning_rate": 0.1,
        "optimizer": "sgd",
        "stage_timeout": 60.0,
    }
    values.update(changes)
    return RunSettings(**values)  # type: ignore[arg-type]


def silo_settings(**changes: object) -> SiloSettings:
    values: dict[str, object] = {
        "silo": "clinic-a",
        "data_source": "builtin://breast_cancer?shard=0&of=3",
        "data_samples": None,
        "data_root": Path("/data"),
        "noise_multiplier": 1.3,
        "sample_rate": 0.21,
        "steps_per_round": 5,
        "rounds": 2,
        "max_grad_norm": 1.0,
        "progress_file": Path("/tmp/progress.json"),
        "secure_aggregation": True,
    }
    values.update(changes)
    return SiloSettings(**values)  # type: ignore[arg-type]
