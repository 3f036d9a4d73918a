"""The string patterns of the schemas accept what the contract allows and nothing else.

The API server evaluates them with Go's RE2; these patterns use only syntax that Python's
``re`` reads the same way.
"""

import re

import pytest

from securemodel.api.schema import DATA_SOURCE, DURATION, QUANTITY


@pytest.mark.parametrize(
    "source",
    [
        "builtin://breast_cancer",
        "builtin://breast_cancer?shard=0&of=3",
        "builtin://digits?shard=12&of=40",
        "pvc://clinic-data/breast/cancer.csv",
        "pvc://data.v2/x",
    ],
)
def test_data_source_accepts(source: str) -> None:
    assert re.fullmatch(DATA_SOURCE, source)


@pytest.mark.parametrize(
    "source",
    [
        "s3://bucket/data.csv",
        "builtin://",
        "builtin://Breast",
        "builtin://breast_cancer?shard=0",
        "builtin://breast_cancer?of=3&shard=0",
        "builtin://breast_cancer?shard=01&of=3",
        "builtin://breast_cancer?shard=0&of=0",
        "pvc://claim",
        "pvc://claim/",
        "pvc://Claim/x",
        "pvc://claim/data file.csv",
        "pvc://claim/x?y",
    ],
)
def test_data_source_rejects(source: str) -> None:
    assert not re.fullmatch(DATA_SOURCE, source)


@pytest.mark.parametrize("value", ["720h", "10m", "1h30m", "90s", "1h0m5s"])
def test_duration_accepts(value: str) -> None:
    assert re.fullmatch(DURATION, value)


@pytest.mark.parametrize("value", ["30d", "10", "1.5h", "m10", "10m1h", "-1h"])
def test_duration_rejects(value: str) -> None:
    assert not re.fullmatch(DURATION, value)


@pytest.mark.parametrize("value", ["1", "500m", "2Gi", "1.5", "1e3", "0"])
def test_quantity_accepts(value: str) -> None:
    assert re.fullmatch(QUANTITY, value)


@pytest.mark.parametrize("value", ["lots", "-1", "2GB", "1 Gi", ""])
def test_quantity_rejects(value: str) -> None:
    assert not re.fullmatch(QUANTITY, value)
