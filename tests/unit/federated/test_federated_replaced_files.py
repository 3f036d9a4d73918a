"""Files one process replaces and another reads (the ServerApp's result, a silo's progress) are read
whole or not at all, never missed while they exist, on the kind of volume the local cluster gives
pods: a bindfs (FUSE) view, where a look that races a rename finds the path missing."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from securemodel.workers.federated.contract import (
    ABSENCE_PATIENCE,
    SiloProgress,
    read_result,
    write_result,
)

REPLACEMENTS = 3000


@pytest.fixture
def fuse_view(tmp_path: Path) -> Iterator[Path]:
    """A bindfs view of a directory, mounted as ``hack/cluster-up.sh`` mounts the cluster's volumes."""
    if shutil.which("bindfs") is None or not os.path.exists("/dev/fuse") or os.geteuid() != 0:
        pytest.skip("needs bindfs, /dev/fuse and root (make test installs bindfs)")
    backing, view = tmp_path / "backing", tmp_path / "view"
    backing.mkdir()
    view.mkdir()
    mounted = subprocess.run(["bindfs", "--perms=a+rwX", "--chmod-ignore", "--chown-ignore", "--chgrp-ignore",
                              str(backing), str(view)], capture_output=True, text=True)  # fmt: skip
    assert mounted.returncode == 0, mounted.stderr
    try:
        yield view
    finally:
        subprocess.run(["fusermount", "-u", "-z", str(view)], check=True)


@contextmanager
def replacing(target: Callable[..., None], *args: object) -> Iterator[multiprocessing.process.BaseProcess]:
    """Another process runs ``target(*args)`` (it replaces a file); it is stopped if the reader fails."""
    writer = multiprocessing.get_context("fork").Process(target=target, args=args)
    writer.start()
    try:
        yield writer
    finally:
        writer.kill()
        writer.join()


def _replace_results(output_dir: Path, times: int) -> None:
    for i in range(times):
        write_result(output_dir, {"status": "Running", "roundsCompleted": i})


def _replace_progress(path: Path, times: int) -> None:
    for i in range(times):
        SiloProgress(rounds_trained=1, steps=i + 1).write(path)


def test_the_result_is_never_missed_while_the_serverapp_replaces_it(fuse_view: Path) -> None:
    write_result(fuse_view, {"status": "Running", "roundsCompleted": -1})
    seen = []
    with replacing(_replace_results, fuse_view, REPLACEMENTS) as writer:
        while writer.is_alive():
            result = read_result(fuse_view)
            assert result is not None, "the result was read as never written while it was being replaced"
            seen.append(result["roundsCompleted"])
    assert read_result(fuse_view) == {"status": "Running", "roundsCompleted": REPLACEMENTS - 1}  # the writer ran through
    assert len(set(seen)) > 10, "the reads did not overlap the replacements: nothing was tested"
    assert seen == sorted(seen)  # each read is one whole version, never an older one after a newer


def test_a_silos_progress_is_never_read_as_nothing_spent_while_it_is_replaced(fuse_view: Path) -> None:
    path = fuse_view / "progress.json"
    SiloProgress(rounds_trained=1, steps=0).write(path)
    reads = 0
    with replacing(_replace_progress, path, REPLACEMENTS) as writer:
        while writer.is_alive():
            assert SiloProgress.read(path).rounds_trained == 1, "a silo's spent round was read as not spent"
            reads += 1
    assert reads > 10 and SiloProgress.read(path) == SiloProgress(1, REPLACEMENTS)


def test_a_file_that_was_never_written_is_absent_after_the_patience_and_a_hint_looks_once(tmp_path: Path) -> None:
    started = time.monotonic()
    assert read_result(tmp_path) is None
    assert SiloProgress.read(tmp_path / "progress.json") == SiloProgress()
    assert time.monotonic() - started >= 2 * ABSENCE_PATIENCE
    started = time.monotonic()
    assert read_result(tmp_path, patience=0) is None
    assert time.monotonic() - started < ABSENCE_PATIENCE
