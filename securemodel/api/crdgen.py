"""Write the CRD manifests to ``crds/``: ``python -m securemodel.api.crdgen [--check] [DIR]``.

``--check`` writes nothing and exits 1 if the files differ from what the schemas produce.
"""

import argparse
import sys
from pathlib import Path

import yaml

from securemodel.api import KINDS
from securemodel.api.crd import crd

HEADER = "# Generated from securemodel/api by `python -m securemodel.api.crdgen`. Do not edit.\n"
DEFAULT_DIR = Path(__file__).resolve().parents[2] / "crds"


def render() -> dict[str, str]:
    """File name to YAML text, one CustomResourceDefinition per kind."""
    return {
        f"{kind.crd_name}.yaml": HEADER + yaml.safe_dump(crd(kind), sort_keys=False, allow_unicode=True, width=100)
        for kind in KINDS
    }


def stale(directory: Path) -> list[str]:
    """The files in ``directory`` that are missing, outdated or not generated."""
    wanted = render()
    problems = [
        name
        for name, text in wanted.items()
        if not (directory / name).is_file() or (directory / name).read_text(encoding="utf-8") != text
    ]
    problems += sorted(p.name for p in directory.glob("*.yaml") if p.name not in wanted)
    return problems


def write(directory: Path) -> None:
    """Replace the generated files in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    wanted = render()
    for path in directory.glob("*.yaml"):
        if path.name not in wanted:
            path.unlink()
    for name, text in wanted.items():
        (directory / name).write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m securemodel.api.crdgen", description=__doc__)
    parser.add_argument("directory", nargs="?", type=Path, default=DEFAULT_DIR, help="default: crds/")
    parser.add_argument("--check", action="store_true", help="fail if the files are stale; write nothing")
    args = parser.parse_args(argv)
    if args.check:
        problems = stale(args.directory)
        for name in problems:
            print(f"stale: {args.directory / name}", file=sys.stderr)
        if problems:
            print("run: python -m securemodel.api.crdgen", file=sys.stderr)
        return 1 if problems else 0
    write(args.directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
