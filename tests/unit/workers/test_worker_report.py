"""Worker results: one JSON line, the termination log only where the kubelet provides one, under 4 KiB."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from securemodel.workers.report import MAX_ERROR_CHARS, describe_error, emit, write_refusal


def test_result_goes_to_stdout_and_an_existing_termination_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "termination-log"
    log.touch()
    emit({"status": "Succeeded", "steps": 3}, log)
    assert json.loads(capsys.readouterr().out) == json.loads(log.read_text()) == {"status": "Succeeded", "steps": 3}


def test_a_missing_termination_log_is_not_created(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    emit({"steps": 0}, tmp_path / "termination-log")
    assert not (tmp_path / "termination-log").exists()
    assert json.loads(capsys.readouterr().out) == {"steps": 0}


def test_a_failure_with_a_huge_error_still_fits_a_termination_message(capsys: pytest.CaptureFixture[str]) -> None:
    error = describe_error(RuntimeError("x" * 10**5))
    line = emit({"kind": "TrainResult", "status": "Failed", "steps": 41, "error": error}, None)
    assert len(line.encode()) < 4096
    assert error.startswith("RuntimeError: xxx") and error.endswith("…")
    capsys.readouterr()


def test_a_refusal_goes_to_the_termination_log_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "termination-log"
    log.touch()
    write_refusal("ArtifactRejected", "x" * 5000, log)
    message = json.loads(log.read_text())
    assert message["reason"] == "ArtifactRejected" and len(message["message"]) == MAX_ERROR_CHARS
    assert capsys.readouterr().out == ""  # stdout is the serve worker's audit trail
    write_refusal("ArtifactRejected", "gone", tmp_path / "absent")
    assert not (tmp_path / "absent").exists()
