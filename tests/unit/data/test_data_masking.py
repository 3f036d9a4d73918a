"""Masking: no name, e-mail, phone number, ID number or exact date of a synthetic patient table survives.

The table is generated here (no real patient data ships). The leak test searches everything the
loader returns (the whole masked view, the training arrays, and its error
messages) for every identifier: full names and each name part, e-mails, phone numbers, US SSNs,
UK NHS numbers, credit-card numbers, IBANs, patient IDs, dates of birth and full postcodes.
"""

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest

from securemodel.data.loading import DataLoadError, load_dataset, load_masked_table
from securemodel.data.masking import (
    BandGeneralization,
    DateGeneralization,
    Masking,
    MaskingError,
    PrefixGeneralization,
    Pseudonymizer,
    read_pseudonym_key,
)
from securemodel.data.tables import TableSchema

pytest.importorskip("presidio_analyzer", reason="presidio is a worker dependency")
csv = pytest.importorskip("pyarrow.csv")
pa = pytest.importorskip("pyarrow")
phonenumbers = pytest.importorskip("phonenumbers")

FIRST = ["Olivia", "Amelia", "Isla", "Noah", "Oliver", "Arthur", "Priya", "Mateusz", "Siobhan", "Kwame"]
LAST = ["Whitfield", "Okonkwo", "Fairbairn", "Castellano", "Lindqvist", "Abernethy", "Nakamura", "Pemberton"]
SCHEMA = TableSchema.from_spec(
    {
        "label": {"column": "diagnosis", "classes": ["benign", "malignant"]},
        "features": [
            {"name": "age", "type": "numeric", "min": 0, "max": 110},
            {"name": "birth_date", "type": "numeric", "min": 1900, "max": 2030},
            {"name": "postcode", "type": "categorical", "categories": ["SW1", "EC1", "M14", "LS6"]},
        ],
    }
)
MASKING = Masking.from_spec(
    {
        "drop": ["name", "email", "phone", "ssn", "card", "iban"],
        "pseudonymize": ["patient_id", "nhs_number"],
        "generalize": [
            {"column": "birth_date", "date": "year"},
            {"column": "postcode", "prefix": 3},
            {"column": "age", "bandWidth": 10},
            {"column": "admitted", "date": "month"},
        ],
        "redact": ["notes"],
        "phoneRegions": ["GB", "US"],
    }
)
KEY = b"k" * 16 + bytes(range(16))


def nhs_number(rng: np.random.Generator) -> str:
    """A 10-digit NHS number with a valid modulus-11 check digit."""
    while True:
        digits = [int(d) for d in rng.integers(0, 10, 9)]
        check = 11 - sum(d * w for d, w in zip(digits, range(10, 1, -1), strict=True)) % 11
        if check < 10:
            number = "".join(map(str, digits)) + str(check % 11 if check != 11 else 0)
            return f"{number[:3]} {number[3:6]} {number[6:]}"


def uk_mobile(rng: np.random.Generator) -> str:
    """A UK mobile number that libphonenumber's metadata calls valid."""
    while True:
        number = f"+44 7{rng.integers(100, 1000)} {rng.integers(10**5, 10**6)}"
        if phonenumbers.is_valid_number(phonenumbers.parse(number)):
            return number


def card_number(rng: np.random.Generator) -> str:
    """A 16-digit Visa-like number with a valid Luhn check digit."""
    digits = [4, *(int(d) for d in rng.integers(0, 10, 14))]
    total = sum(d if i % 2 else (2 * d if 2 * d < 10 else 2 * d - 9) for i, d in enumerate(digits))
    number = "".join(map(str, digits)) + str((10 - total % 10) % 10)
    return " ".join(number[i : i + 4] for i in range(0, 16, 4))


def iban(rng: np.random.Generator) -> str:
    """A GB IBAN with valid check digits."""
    bban = "WEST" + "".join(str(d) for d in rng.integers(0, 10, 14))
    numeric = int("".join(str(int(c, 36)) for c in bban + "GB00"))
    return f"GB{98 - numeric % 97:02d}{bban}"


def patients(n: int, seed: int = 0) -> tuple[dict[str, list[str]], list[str]]:
    """A synthetic patient table (as CSV text columns) and every identifier in it."""
    rng = np.random.default_rng(seed)
    table: dict[str, list[str]] = {c: [] for c in [
        "patient_id", "name", "email", "phone", "ssn", "nhs_number", "card", "iban", "birth_date", "postcode",
        "age", "admitted", "notes", "diagnosis"]}  # fmt: skip
    identifiers: list[str] = []
    for i in range(n):
        first, last = str(rng.choice(FIRST)), str(rng.choice(LAST))
        born = dt.date(1930, 1, 1) + dt.timedelta(days=int(rng.integers(0, 30000)))
        row = {
            "patient_id": f"MRN-{rng.integers(10**6, 10**7)}",
            "name": f"{first} {last}",
            "email": f"{first.lower()}.{last.lower()}{i}@example-mail.co.uk",
            "phone": uk_mobile(rng),
            "ssn": f"{rng.integers(101, 665)}-{rng.integers(11, 99)}-{rng.integers(1001, 9999)}",
            "nhs_number": nhs_number(rng),
            "card": card_number(rng),
            "iban": iban(rng),
            "birth_date": born.isoformat(),
            "postcode": str(rng.choice(["SW1A 1AA", "EC1V 9NR", "M14 5RT", "LS6 3HN"])),
            "age": str(int(rng.integers(18, 95))),
            "admitted": f"2025-{rng.integers(1, 13):02d}-{rng.integers(1, 29):02d}",
            "diagnosis": str(rng.choice(["benign", "malignant"])),
        }
        row["notes"] = (
            f"Pt {row['name']} (DOB {born.strftime('%d/%m/%Y')}) seen. Call {row['phone']} or e-mail "
            f"{row['email']}. SSN {row['ssn']}, NHS {row['nhs_number']}. Paid by card {row['card']}, "
            f"IBAN {row['iban']}. Lives at {row['postcode']}. Mr {last} reports pain."
        )
        for column, values in table.items():
            values.append(row[column])
        identifiers += [row[c] for c in ("patient_id", "name", "email", "phone", "ssn", "nhs_number", "card", "iban")]
        identifiers += [first, last, row["birth_date"], born.strftime("%d/%m/%Y"), row["postcode"], row["admitted"]]
        identifiers += [row[c].replace(" ", "") for c in ("phone", "nhs_number", "card")]
    return table, identifiers


def write(path: Path, table: dict[str, list[str]]) -> None:
    csv.write_csv(pa.table(table), path)


@pytest.fixture(scope="module")
def clinic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("volume")
    table, identifiers = patients(60)
    write(root / "patients.csv", table)
    return root, identifiers


def leaks(text: str, identifiers: list[str]) -> list[str]:
    folded = text.casefold()
    return sorted({i for i in identifiers if i.casefold() in folded})


def test_the_whole_masked_view_holds_no_identifier(clinic: tuple[Path, list[str]]) -> None:
    root, identifiers = clinic
    view = load_masked_table("pvc://clinic/patients.csv", schema=SCHEMA, masking=MASKING, key=KEY, data_root=root,
                             samples=60)  # fmt: skip
    assert list(view) == ["patient_id", "nhs_number", "birth_date", "postcode", "age", "admitted", "notes",
                          "diagnosis"]  # fmt: skip
    assert leaks(json.dumps(view), identifiers) == []
    assert {len(p) for p in view["patient_id"]} == {64}, "HMAC-SHA256 in hex"
    assert set(view["postcode"]) <= {"SW1", "EC1", "M14", "LS6"}
    assert all(isinstance(year, int) for year in view["birth_date"])
    assert all(len(month) == 7 for month in view["admitted"])
    assert all(age % 10 == 0 for age in view["age"])
    note = view["notes"][0]
    for tag in ("<EMAIL_ADDRESS>", "<PHONE_NUMBER>", "<US_SSN>", "<UK_NHS>", "<CREDIT_CARD>", "<IBAN_CODE>"):
        assert tag in note, (tag, note)
    assert "<IDENTIFIER>" in note and "reports pain" in note


def test_training_arrays_do_not_depend_on_identifiers(clinic: tuple[Path, list[str]], tmp_path: Path) -> None:
    """Re-drawing every identifier (same features) leaves everything the loader returns for training unchanged."""
    root, _ = clinic
    table, _ = patients(60)
    other, _ = patients(60, seed=1)
    for column in ("patient_id", "name", "email", "phone", "ssn", "nhs_number", "card", "iban", "notes"):
        table[column] = other[column]
    table["birth_date"] = [d[:4] + "-12-31" for d in table["birth_date"]]  # same year, other day
    write(tmp_path / "patients.csv", table)
    args = {"samples": 60, "schema": SCHEMA, "masking": MASKING}
    first = load_dataset("pvc://clinic/patients.csv", data_root=root, **args)
    second = load_dataset("pvc://clinic/patients.csv", data_root=tmp_path, **args)
    for name in ("x_train", "y_train"):
        assert np.array_equal(getattr(first, name), getattr(second, name)), name
    assert first.encoding == second.encoding and first.input_shape == (1 + 1 + 4,)
    assert first.x_train.dtype == np.float32 and np.abs(first.x_train).max() <= 1


def test_errors_name_the_column_and_row_but_never_the_identifier(tmp_path: Path) -> None:
    table, identifiers = patients(5)
    table["birth_date"][3] = table["name"][3]  # a name where a date belongs
    write(tmp_path / "p.csv", table)
    with pytest.raises(DataLoadError) as raised:
        load_dataset("pvc://c/p.csv", data_root=tmp_path, samples=5, schema=SCHEMA,
                     masking=MASKING)  # fmt: skip
    assert "column 'birth_date', row 4: not an ISO 8601 date" in str(raised.value)
    assert leaks(str(raised.value), identifiers) == []


def test_pseudonyms_are_keyed_stable_and_need_the_key(tmp_path: Path) -> None:
    first, again, other = Pseudonymizer(KEY), Pseudonymizer(KEY), Pseudonymizer(KEY[::-1])
    assert first("MRN-1") == again("MRN-1") != first("MRN-2")
    assert first("MRN-1") != other("MRN-1")
    assert first(12345) == first("12345") and first(None) is None
    assert KEY.decode(errors="ignore") not in repr(first)
    with pytest.raises(MaskingError, match="no key was given"):
        MASKING.view({"patient_id": ["MRN-1"]})
    (tmp_path / "key").write_bytes(KEY)
    assert read_pseudonym_key(tmp_path / "key") == KEY
    (tmp_path / "short").write_bytes(b"secret-but-short")
    with pytest.raises(MaskingError, match="has 16 bytes; it needs at least 32") as raised:
        read_pseudonym_key(tmp_path / "short")
    assert "secret" not in str(raised.value)


def test_generalizations() -> None:
    assert DateGeneralization("year").apply(["1984-02-29", dt.date(2001, 7, 4), None], "d") == [1984, 2001, None]
    assert DateGeneralization("month").apply(["2025-03-09T10:15:00"], "d") == ["2025-03"]
    assert BandGeneralization(10).apply(["47", 40, 39.9, None], "a") == [40, 40, 30, None]
    assert BandGeneralization(2.5).apply([6.0], "a") == [5]
    assert PrefixGeneralization(3).apply(["sw1a 1aa", "EC1V9NR", "M1"], "p") == ["SW1", "EC1", "M1"]
    with pytest.raises(MaskingError, match="column 'a', row 2: not a number"):
        BandGeneralization(10).apply(["1", "x"], "a")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"drop": ["a"], "redact": ["a"]}, "'a' is named by two masking rules"),
        ({"generalize": [{"column": "a", "date": "year", "prefix": 2}]}, "exactly one of date, bandWidth and prefix"),
        ({"generalize": [{"column": "a", "date": "week"}]}, "date must be year or month"),
        ({"generalize": [{"column": "a", "bandWidth": 0}]}, "bandWidth must be positive"),
    ],
)
def test_malformed_masking_is_refused(spec: dict, message: str) -> None:
    with pytest.raises(MaskingError, match=message):
        Masking.from_spec(spec)


def test_the_label_can_not_be_masked() -> None:
    with pytest.raises(MaskingError, match="label column 'diagnosis' cannot be generalized"):
        Masking.from_spec({"generalize": [{"column": "diagnosis", "prefix": 1}]}).check(SCHEMA)
    with pytest.raises(MaskingError, match="'diagnosis' is a feature or the label"):
        Masking.from_spec({"redact": ["diagnosis"]}).check(SCHEMA)
