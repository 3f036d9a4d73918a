"""docs/argocd/health.lua judges each fixture of docs/argocd/health_test.yaml as Argo CD must.

The script runs in Debian's Lua 5.4 (hack/install-deps.sh installs lua5.4), as Argo CD runs it:
a chunk that reads the global ``obj`` and returns ``{status, message}``, without io, os or
require. The object is handed over as a Lua table constructor, numbers as Argo CD's JSON gives them.
"""

import math
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

ARGOCD = Path(__file__).resolve().parents[3] / "docs" / "argocd"
SCRIPT = ARGOCD / "health.lua"
CASES: list[dict[str, Any]] = yaml.safe_load((ARGOCD / "health_test.yaml").read_text(encoding="utf-8"))["tests"]
KINDS = ("PrivacyBudget", "SecureModel", "FederatedRound")
# Reads the object from stdin, takes away what Argo CD's sandbox does not offer, runs the script.
HARNESS = """
local check = assert(loadfile(arg[1]))
obj = assert(load("return " .. io.read("a")))()
io, os, require, package, debug, dofile, loadfile, load = nil, nil, nil, nil, nil, nil, nil, nil
local hs = check()
print(hs.status)
print(hs.message)
"""


def lua_interpreter() -> str:
    found = shutil.which("lua5.4") or shutil.which("lua")
    if found is None:
        pytest.skip("no Lua interpreter: install lua5.4 (hack/install-deps.sh)")
    return found


def to_lua(value: Any) -> str:
    """``value`` (parsed YAML) as a Lua expression."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "nil"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        assert math.isfinite(value), value
        return repr(value)
    if isinstance(value, str):
        escaped = "".join(
            chr(b) if 0x20 <= b < 0x7F and chr(b) not in '"\\' else f"\\{b:03d}" for b in value.encode("utf-8")
        )
        return f'"{escaped}"'
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"[{to_lua(str(k))}] = {to_lua(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "{" + ", ".join(to_lua(v) for v in value) + "}"
    raise TypeError(f"no Lua form for {type(value).__name__}")


def health(obj: Mapping[str, Any], tmp_path: Path) -> tuple[str, str]:
    harness = tmp_path / "harness.lua"
    harness.write_text(HARNESS, encoding="utf-8")
    result = subprocess.run(
        [lua_interpreter(), str(harness), str(SCRIPT)],
        input=to_lua(obj),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    status, message = result.stdout.rstrip("\n").split("\n", 1)
    return status, message


@pytest.mark.parametrize("case", CASES, ids=[Path(c["inputPath"]).stem for c in CASES])
def test_each_fixture_gets_the_expected_health(case: dict[str, Any], tmp_path: Path) -> None:
    obj = yaml.safe_load((ARGOCD / case["inputPath"]).read_text(encoding="utf-8"))
    expected = case["healthStatus"]
    assert health(obj, tmp_path) == (expected["status"], expected["message"])


def test_every_fixture_is_checked_and_every_kind_has_each_outcome() -> None:
    listed = {c["inputPath"] for c in CASES}
    assert listed == {f"testdata/{p.name}" for p in (ARGOCD / "testdata").glob("*.yaml")}
    outcomes = {
        (yaml.safe_load((ARGOCD / c["inputPath"]).read_text(encoding="utf-8"))["kind"], c["healthStatus"]["status"])
        for c in CASES
    }
    assert outcomes == {(kind, status) for kind in KINDS for status in ("Healthy", "Progressing", "Degraded")}


def test_to_lua_round_trips_strings_with_quotes_and_unicode(tmp_path: Path) -> None:
    text = 'ε "quoted" \\ back\nslash'
    obj = {
        "metadata": {"generation": 1},
        "status": {"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True", "message": text}]},
    }
    assert health(obj, tmp_path) == ("Healthy", text)
