"""securemodel-worker: five subcommands that print the configuration they parsed."""

import json
import subprocess
import sys

import pytest

from securemodel.workers import cli

TRAIN = [
    "train", "--architecture", "mlp", "--params", '{"hidden": [64, 32]}',
    "--data-source", "builtin://breast_cancer", "--noise-multiplier", "1.1", "--sample-rate", "0.14",
    "--steps", "143", "--max-grad-norm", "1.0", "--output", "/artifacts/model.enc",
]  # fmt: skip


def test_help_lists_the_five_subcommands() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "securemodel.workers.cli", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("train", "compress", "serve", "fl-aggregate", "fl-client"):
        assert command in result.stdout


def test_train_prints_its_parsed_configuration(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(TRAIN) == 0
    config = json.loads(capsys.readouterr().out)
    assert config["command"] == "train"
    assert config["params"] == {"hidden": [64, 32]}
    assert (config["noise_multiplier"], config["sample_rate"], config["steps"]) == (1.1, 0.14, 143)


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (["--sample-rate", "1.5"], "--sample-rate: 1.5 is not in (0, 1]"),
        (["--steps", "0"], "--steps: 0 is not ≥ 1"),
        (["--entrypoint", "pkg.mod:build"], "not allowed with argument --architecture"),
        (["--params", "[1]"], "--params: not a JSON object"),
    ],
)
def test_train_rejects_bad_arguments(change: list[str], complaint: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(TRAIN + change)
    assert exit_info.value.code == 2
    assert complaint in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["compress", "--input", "/a/model.enc", "--output", "/a/small.enc",
         "--sparsity", "0.5", "--quantization", "int8"],
        ["serve", "--model", "/a/small.enc", "--name", "tumor-classifier", "--tls-dir", "/tls"],
        ["fl-aggregate", "--clients", "clinic-a,clinic-b,clinic-c", "--min-clients", "2", "--threshold", "2",
         "--output", "/a/global.enc"],
        ["fl-client", "--name", "clinic-a", "--aggregator", "https://round-1-aggregator:8443",
         "--data-source", "builtin://breast_cancer?shard=0&of=3", "--noise-multiplier", "1.0",
         "--sample-rate", "0.1", "--steps", "30", "--max-grad-norm", "1.0"],
    ],
    ids=lambda argv: argv[0],
)  # fmt: skip
def test_every_subcommand_prints_its_configuration(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 0
    config = json.loads(capsys.readouterr().out)
    assert config["command"] == argv[0]
    if argv[0] == "fl-aggregate":
        assert config["clients"] == ["clinic-a", "clinic-b", "clinic-c"]


def test_compress_requires_its_input(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["compress", "--output", "/a/small.enc"])
    assert "the following arguments are required: --input" in capsys.readouterr().err
