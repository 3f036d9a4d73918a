"""kubectl as people type it: the category does not shadow a kind, and status numbers show readably."""

from securemodel.api import CATEGORY, KINDS
from securemodel.api.crd import crd
from securemodel.api.kinds import DISPLAY_DECIMALS
from securemodel.api.privacy_budget import KIND as PRIVACY_BUDGET
from securemodel.api.secure_model import KIND as SECURE_MODEL


def test_the_category_is_no_name_of_a_kind() -> None:
    for kind in KINDS:
        names = crd(kind)["spec"]["names"]
        assert names["categories"] == [CATEGORY] == ["securemodel-all"]
        assert CATEGORY not in (names["singular"], names["plural"], *names["shortNames"])


def test_status_number_columns_read_the_display_text_the_schema_holds() -> None:
    shown = set()
    for kind in KINDS:
        version = crd(kind)["spec"]["versions"][0]
        display = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["display"]
        for column in version["additionalPrinterColumns"]:
            assert not (column["type"] == "number" and column["jsonPath"].startswith(".status.")), column
            if column["jsonPath"].startswith(".status.display."):
                key = column["jsonPath"].removeprefix(".status.display.")
                assert column["type"] == "string" and display["properties"][key]["type"] == "string"
                shown.add(key)
    assert shown == set(DISPLAY_DECIMALS), "every display format is used, and only those"


def test_display_formats_the_numbers_as_people_read_them() -> None:
    status = {"privacy": {"epsilonSpent": 1.9999938109030821}, "model": {"compressedAccuracy": 0.95614035}}
    assert SECURE_MODEL.display(status) == {"epsilonSpent": "2.00", "compressedAccuracy": "0.956"}
    assert SECURE_MODEL.display({"privacy": {"epsilonSpent": 0}}) == {"epsilonSpent": "0.00"}
    assert SECURE_MODEL.display({"phase": "Training", "model": None}) == {}
    budget = {"epsilonCommitted": 4, "epsilonReserved": 2.004999, "epsilonAvailable": 3.995001, "claims": []}
    assert PRIVACY_BUDGET.display(budget) == {
        "epsilonCommitted": "4.00",
        "epsilonReserved": "2.00",
        "epsilonAvailable": "4.00",
    }
