"""securemodel-worker: the five subcommands and how they reject bad arguments."""

import json
import subprocess
import sys

import pytest

from securemodel.workers import cli

TRAIN = [
    "train", "--architecture", "mlp", "--params", '{"hidden": [64, 32]}',
    "--data-source", "builtin://breast_cancer", "--noise-multiplier", "1.1", "--sample-rate", "0.14",
    "--steps", "143", "--max-grad-norm", "1.0", "--output", "/artifacts/model.enc",
    "--data-key-file", "/keys/data-key", "--model-uid", "0b6c1f9e-2d1a-4c1e-9a53-5c0e0b7d2f11",
    "--training-version", "v1a2b3c4d",
]  # fmt: skip


def test_help_lists_the_five_subcommands_without_importing_torch() -> None:
    code = "from securemodel.workers import cli; cli.main(['--help'])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    for command in ("train", "compress", "serve", "fl-aggregate", "fl-client"):
        assert command in result.stdout
    probe = "import sys; import securemodel.workers.cli; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "False"


def test_train_parses_what_the_operator_passes() -> None:
    args = cli.build_parser().parse_args([*TRAIN, "--device", "cpu", "--data-samples", "569"])
    assert args.params == {"hidden": [64, 32]}
    assert (args.noise_multiplier, args.sample_rate, args.steps) == (1.1, 0.14, 143)
    assert (str(args.data_root), str(args.termination_log), args.device) == ("/data", "/dev/termination-log", "cpu")


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (["--sample-rate", "1.5"], "--sample-rate: 1.5 is not in (0, 1]"),
        (["--steps", "0"], "--steps: 0 is not ≥ 1"),
        (["--noise-multiplier", "0"], "--noise-multiplier: 0 is not > 0"),
        (["--entrypoint", "pkg.mod:build"], "not allowed with argument --architecture"),
        (["--params", "[1]"], "--params: not a JSON object"),
        (["--device", "tpu"], "invalid choice: 'tpu'"),
    ],
)
def test_train_rejects_bad_arguments(change: list[str], complaint: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(TRAIN + change)
    assert exit_info.value.code == 2
    assert complaint in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "missing"),
    [
        (["compress", "--output", "/a/small.enc", "--data-key-file", "/k"], "--input"),
        (["compress", "--input", "/a/model.enc", "--output", "/a/small.enc"], "--data-key-file"),
        (["serve", "--artifact", "/a/small.enc", "--tls-dir", "/tls", "--model-name", "m"], "--data-key-file"),
        # the artifacts' binding and the served artifact's digest come from the operator, always
        (TRAIN[:-4], "--model-uid, --training-version"),
        (["compress", "--input", "/a/model.enc", "--output", "/a/small.enc"], "--model-version"),
        (["serve", "--artifact", "/a/small.enc", "--tls-dir", "/tls", "--model-name", "m"], "--artifact-digest"),
    ],
)
def test_required_arguments_are_enforced(argv: list[str], missing: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(argv)
    (complaint,) = [line for line in capsys.readouterr().err.splitlines() if "arguments are required" in line]
    assert missing in complaint


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (["--model-uid", "a uid"], "--model-uid: 'a uid' is not a uid or version"),
        (["--training-version", ""], "--training-version: '' is not a uid or version"),
    ],
)
def test_binding_values_are_checked(change: list[str], complaint: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(TRAIN + change)
    assert complaint in capsys.readouterr().err


def test_serve_refuses_a_malformed_digest(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["serve", "--artifact", "/a", "--artifact-digest", "sha256:ABC", "--model-uid", "u",
                  "--training-version", "v1", "--model-version", "v2", "--data-key-file", "/k", "--tls-dir", "/t",
                  "--model-name", "m"])  # fmt: skip
    assert "--artifact-digest: 'sha256:ABC' is not sha256:<64 lower-case hex digits>" in capsys.readouterr().err


DP_FLAGS = ["--noise-multiplier", "1.1", "--sample-rate", "0.14", "--steps", "143", "--max-grad-norm", "1.0"]
WITHOUT_DP = [arg for arg in TRAIN if arg not in DP_FLAGS]


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        # DP-SGD needs all of the operator's calibration; --public takes none of it, and needs epochs and batch size
        ([*WITHOUT_DP, "--noise-multiplier", "1.1"], "DP-SGD (without --public) needs --sample-rate, --steps, --max-grad-norm"),
        ([*TRAIN, "--public", "--epochs", "3", "--batch-size", "64"], "--public does not take --noise-multiplier"),
        ([*WITHOUT_DP, "--public", "--epochs", "3"], "--public needs --batch-size"),
        ([*TRAIN, "--epochs", "3"], "DP-SGD (without --public) does not take --epochs"),
    ],
)
def test_train_is_either_dp_sgd_or_public_never_a_mix(argv: list[str], complaint: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert complaint in capsys.readouterr().err


def test_train_parses_a_public_training() -> None:
    args = cli.build_parser().parse_args([*WITHOUT_DP, "--public", "--epochs", "3", "--batch-size", "64"])
    assert (args.public, args.epochs, args.batch_size, args.noise_multiplier) == (True, 3, 64, None)
    assert cli.training_mode_problem(args) is None
