"""Every manifest in tests/invalid/ is rejected by the API server at `kubectl apply`.

Each file states why it is invalid in its first comment line and, on `# expect:` lines, the
fragments the error must contain: at least the path of the offending field.
"""

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

INVALID = Path(__file__).resolve().parents[1] / "invalid"
MANIFESTS = sorted(INVALID.glob("*.yaml"))


def expectations(path: Path) -> list[str]:
    return [line.removeprefix("# expect: ") for line in path.read_text().splitlines() if line.startswith("# expect: ")]


def test_there_are_enough_invalid_manifests_and_each_names_a_field() -> None:
    assert len(MANIFESTS) >= 25
    for path in MANIFESTS:
        fragments = expectations(path)
        assert any(f.startswith(("spec.", "metadata.", 'unknown field "spec.')) for f in fragments), path.name


@pytest.mark.parametrize("manifest", MANIFESTS, ids=[p.stem for p in MANIFESTS])
def test_the_api_server_rejects_it_naming_the_field(
    manifest: Path, kubectl: Callable[..., subprocess.CompletedProcess[str]], module_namespace: str
) -> None:
    result = kubectl("apply", "-n", module_namespace, "-f", str(manifest))
    assert result.returncode != 0, f"{manifest.name} was accepted: {result.stdout}"
    for fragment in expectations(manifest):
        assert fragment in result.stderr
