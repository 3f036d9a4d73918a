"""crds/ is generated from securemodel.api and must not drift from it."""

from pathlib import Path

from securemodel.api import crdgen

REPO = Path(__file__).resolve().parents[3]


def test_crds_directory_matches_the_schemas() -> None:
    assert crdgen.stale(REPO / "crds") == [], "crds/ is stale: run `python -m securemodel.api.crdgen`"


def test_check_fails_on_an_edited_file_and_passes_after_regenerating(tmp_path: Path) -> None:
    assert crdgen.main([str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "federatedrounds.securemodel.io.yaml",
        "privacybudgets.securemodel.io.yaml",
        "securemodels.securemodel.io.yaml",
    ]
    edited = tmp_path / "securemodels.securemodel.io.yaml"
    edited.write_text(edited.read_text().replace("maxLength: 44", "maxLength: 60"))
    (tmp_path / "leftover.yaml").write_text("{}\n")
    assert crdgen.stale(tmp_path) == ["securemodels.securemodel.io.yaml", "leftover.yaml"]
    assert crdgen.main(["--check", str(tmp_path)]) == 1
    assert crdgen.main([str(tmp_path)]) == 0
    assert crdgen.main(["--check", str(tmp_path)]) == 0
