"""hack/git-http.py serves bare repositories over Git's smart HTTP protocol to the real git client.

The server runs as the process hack/flux.sh starts, on a free port; a clone, a push and a fetch go
over real HTTP. The pushed blob is larger than git's http.postBuffer (1 MiB), so the push arrives
with a chunked request body; the fetching clone has 40 commits of its own, so the haves it
negotiates with make a request body over 1 KiB, which git sends gzip-encoded.
"""

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SERVER = Path(__file__).resolve().parents[3] / "hack" / "git-http.py"


def git(*args: str, cwd: Path | None = None) -> str:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(cwd or Path.cwd())}
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
    return done.stdout


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A directory with the bare repository models.git, and the URL it is served at."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    root = tmp_path / "served"
    root.mkdir()
    git("init", "--bare", "--initial-branch=main", str(root / "models.git"))
    server = subprocess.Popen(
        [sys.executable, str(SERVER), "--root", str(root), "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        match = re.fullmatch(r"listening on (http://127\.0\.0\.1:\d+)\n", line)
        assert match, f"server said {line!r}"
        yield root, f"{match.group(1)}/models.git"
    finally:
        server.terminate()
        server.wait(timeout=10)


def commit(work: Path, name: str, content: bytes, message: str) -> str:
    (work / name).write_bytes(content)
    git("add", name, cwd=work)
    git("-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-q", "-m", message, cwd=work)
    return git("rev-parse", "HEAD", cwd=work).strip()


def test_push_clone_and_fetch_over_smart_http(served: tuple[Path, str], tmp_path: Path) -> None:
    root, url = served
    work = tmp_path / "work"
    git("clone", "-q", url, str(work))  # an empty repository
    large = os.urandom(3 << 20)
    first = commit(work, "model.bin", large, "first")
    git("push", "-q", "origin", "HEAD:main", cwd=work)
    assert git("rev-parse", "main", cwd=root / "models.git").strip() == first

    clone = tmp_path / "clone"
    git("clone", "-q", url, str(clone))
    assert (clone / "model.bin").read_bytes() == large

    for n in range(40):
        git("-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-q", "--allow-empty", "-m", f"local {n}",
            cwd=clone)  # fmt: skip
    second = commit(work, "examples.yaml", b"kind: SecureModel\n", "second")
    git("push", "-q", "origin", "HEAD:main", cwd=work)
    git("fetch", "-q", "origin", cwd=clone)
    assert git("rev-parse", "origin/main", cwd=clone).strip() == second
    assert git("show", "origin/main:examples.yaml", cwd=clone) == "kind: SecureModel\n"


def test_unknown_repository_is_not_found(served: tuple[Path, str], tmp_path: Path) -> None:
    _, url = served
    missing = url.replace("models.git", "missing.git")
    done = subprocess.run(
        ["git", "ls-remote", missing], capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
    )  # fmt: skip
    assert done.returncode != 0
    assert "not found" in done.stderr
