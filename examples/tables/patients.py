"""Write a synthetic hospital export for examples/tables: ``python patients.py OUT.csv [--rows N] [--seed S]``.

No real patient data may ship, so the rows are made up, but they look like the real thing: direct
identifiers (``patient_id``, ``nhs_number`` with a valid check digit, ``name``, ``email``,
``phone``), quasi-identifiers (``birth_date``, ``postcode``, ``admitted``), a free-text ``notes``
column that repeats some identifiers, the features ``age`` and ``sex``, and the label
``readmitted``, which depends on age, sex and postcode so that a model has something to learn.
The columns are exactly those ``securemodel-patient-table.yaml`` declares. Standard library only,
so it runs in any Python image (the e2e test runs it in a Job that writes onto the claim).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import math
import random
from pathlib import Path

COLUMNS = (
    "patient_id", "nhs_number", "name", "email", "phone", "age", "birth_date", "sex",
    "postcode", "admitted", "notes", "readmitted",
)  # fmt: skip
FIRST = ("Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "Tony", "Radia", "Whitfield")
LAST = ("Lovelace", "Turing", "Hopper", "Dijkstra", "Liskov", "Knuth", "Allen", "Hoare", "Perlman", "Diffie")
# Postcode districts (the generalised prefix the schema declares) with their readmission risk.
DISTRICTS = {"SW1A": 0.0, "EC1V": 0.3, "M14": 0.8, "LS6": 0.5}
ADMITTED = dt.date(2025, 1, 1)
UNIT_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"


def nhs_number(rng: random.Random) -> str:
    """A 10-digit number with a valid NHS modulus-11 check digit, spaced 3-3-4."""
    while True:
        digits = [rng.randrange(10) for _ in range(9)]
        check = 11 - sum(d * (10 - i) for i, d in enumerate(digits)) % 11
        if check == 11:
            check = 0
        if check != 10:
            text = "".join(map(str, [*digits, check]))
            return f"{text[:3]} {text[3:6]} {text[6:]}"


def patient(index: int, rng: random.Random) -> dict[str, str]:
    """One synthetic row."""
    first, last = rng.choice(FIRST), rng.choice(LAST)
    name = f"{first} {last}"
    email = f"{first.lower()}.{last.lower()}{index}@example.org"
    phone = f"020 7946 {rng.randrange(1000):04d}"  # Ofcom's range for drama: never a real line
    admitted = ADMITTED + dt.timedelta(days=rng.randrange(365))
    age = rng.randrange(18, 100)
    born = admitted - dt.timedelta(days=age * 365 + rng.randrange(365))
    sex = rng.choice("FMX")
    district = rng.choice(list(DISTRICTS))
    postcode = f"{district} {rng.randrange(1, 10)}{rng.choice(UNIT_LETTERS)}{rng.choice(UNIT_LETTERS)}"
    risk = 3.0 * (age - 60) / 40 + 2.0 * DISTRICTS[district] + (0.5 if sex == "M" else 0.0) - 0.8
    readmitted = "yes" if rng.random() < 1 / (1 + math.exp(-risk)) else "no"
    notes = rng.choice(
        (
            f"Seen with {name}'s daughter; call back on {phone}.",
            f"Discharge letter sent to {email}.",
            "Stable on discharge, no follow-up needed.",
            f"Patient {name} asked for results by e-mail ({email}).",
        )
    )
    return {
        "patient_id": f"P-{index:06d}",
        "nhs_number": nhs_number(rng),
        "name": name,
        "email": email,
        "phone": phone,
        "age": str(age),
        "birth_date": born.isoformat(),
        "sex": sex,
        "postcode": postcode,
        "admitted": admitted.isoformat(),
        "notes": notes,
        "readmitted": readmitted,
    }


def patients(rows: int, seed: int = 0) -> list[dict[str, str]]:
    """``rows`` synthetic rows; the same ``seed`` gives the same table."""
    rng = random.Random(seed)
    return [patient(i, rng) for i in range(1, rows + 1)]


def write_csv(path: Path, rows: int, seed: int = 0) -> list[dict[str, str]]:
    """Write the table to ``path`` (its folder is created) and return its rows."""
    table = patients(rows, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, COLUMNS)
        writer.writeheader()
        writer.writerows(table)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path)
    parser.add_argument("--rows", type=int, default=5000, help="must equal spec.data.samples")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    write_csv(args.output, args.rows, args.seed)


if __name__ == "__main__":
    main()
