"""``spec.data.masking``: the masked view of a table, the only view training, validation and serving see.

Each rule names columns of the table:

* ``drop``: the column is removed;
* ``pseudonymize``: each value becomes ``HMAC-SHA256(key, cell_text(value))`` in hex, so equal
  identifiers stay equal (joins still work) but cannot be reversed without the key. The key is
  the content of a file the worker is given (a Secret's key mounted into the pod, see
  :func:`read_pseudonym_key`); it is never logged, stored in an artifact or shown in a ``repr``;
* ``generalize``: dates to their ``year`` (an integer) or ``month`` (``YYYY-MM``), numbers to
  bands (``bandWidth`` w: ``floor(v / w) * w``), postcodes to a ``prefix`` of n characters
  (spaces removed, upper case);
* ``redact``: free text is passed through Microsoft Presidio's pattern recognizers (e-mail,
  phone, credit card, IBAN, IP address, URL, dates, US SSN / ITIN / passport / bank numbers,
  medical licence, UK NHS number / NINO / passport / postcode), each finding replaced by its
  type in angle brackets, e.g. ``<EMAIL_ADDRESS>``; then every word that occurs in a dropped or
  pseudonymized column of the table (a patient's name in a note, say) becomes
  ``<IDENTIFIER>``. No NER model is used (none installs from the package registries), so a
  person's name in free text is caught only this way: when it is a value of such a column.

Missing values stay missing. Masking is per cell and needs no statistic of the data, except
that redaction's list of identifier words is the table's own. A column in no rule is kept as it
is; :func:`check_columns` makes sure every column of a table is declared somewhere.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import math
import re
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from securemodel.data.tables import SchemaError, TableSchema, cell_number, cell_text

# The least key length accepted for pseudonymization: 256 bits, the size of HMAC-SHA256's output.
MIN_KEY_BYTES = 32
# Phone numbers are recognised as numbers of these regions unless spec.data.masking says otherwise.
DEFAULT_PHONE_REGIONS: tuple[str, ...] = ("US", "GB")
# Words of identifier columns shorter than this, or digit groups shorter than the next, are not redacted
# from free text by themselves (they would hit too much unrelated text); patterns still apply.
_MIN_WORD = 2
_MIN_DIGITS = 4
_WORD = re.compile(r"\w+")


class MaskingError(SchemaError):
    """A malformed masking rule, a missing key, or a cell a rule cannot apply to."""


def read_pseudonym_key(path: Path | str) -> bytes:
    """The pseudonymization key: the bytes of the file at ``path`` (a mounted Secret key), at least 32.

    Errors name the path, never the content.
    """
    try:
        key = Path(path).read_bytes()
    except OSError as err:
        raise MaskingError(f"cannot read the pseudonymization key file {path}: {err.strerror}") from None
    if len(key) < MIN_KEY_BYTES:
        raise MaskingError(
            f"the pseudonymization key in {path} has {len(key)} bytes; it needs at least {MIN_KEY_BYTES} "
            "(e.g. the output of `openssl rand -hex 32`)"
        )
    return key


class Pseudonymizer:
    """Keyed HMAC-SHA256 of a cell's text; its ``repr`` does not show the key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise MaskingError(f"a pseudonymization key needs at least {MIN_KEY_BYTES} bytes")
        self._key = key

    def __repr__(self) -> str:
        return "Pseudonymizer(key=<hidden>)"

    def __call__(self, value: object) -> str | None:
        """The pseudonym of ``value`` (64 hex digits); None stays None."""
        if value is None:
            return None
        return hmac.new(self._key, cell_text(value).encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class DateGeneralization:
    """A date (ISO 8601 text, or a date / datetime cell) to its year (int) or month (``YYYY-MM``)."""

    unit: Literal["year", "month"]

    def apply(self, values: Sequence[object], column: str) -> list[object]:
        """The generalized cells; raises :class:`MaskingError` naming the row of a cell that is no date."""
        out: list[object] = []
        for row, value in enumerate(values, 1):
            if value is None:
                out.append(None)
                continue
            date = _date(value, column, row)
            out.append(date.year if self.unit == "year" else f"{date.year:04d}-{date.month:02d}")
        return out

    def to_spec(self) -> dict[str, Any]:
        """The rule as in ``spec.data.masking.generalize`` (without the column)."""
        return {"date": self.unit}


@dataclass(frozen=True)
class BandGeneralization:
    """A number to the lower edge of its band of ``width``: ``floor(v / width) * width``."""

    width: float

    def apply(self, values: Sequence[object], column: str) -> list[object]:
        """The generalized cells (integral edges as int); raises :class:`MaskingError` for a non-number."""
        out: list[object] = []
        for row, value in enumerate(values, 1):
            if value is None:
                out.append(None)
                continue
            try:
                number = cell_number(value, column, row)
            except SchemaError as err:
                raise MaskingError(str(err)) from None
            edge = math.floor(number / self.width) * self.width
            out.append(int(edge) if float(edge).is_integer() else edge)
        return out

    def to_spec(self) -> dict[str, Any]:
        """The rule as in ``spec.data.masking.generalize`` (without the column)."""
        return {"bandWidth": self.width}


@dataclass(frozen=True)
class PrefixGeneralization:
    """A code (a postcode) to its first ``length`` characters, spaces removed, in upper case."""

    length: int

    def apply(self, values: Sequence[object], column: str) -> list[object]:
        """The generalized cells."""
        del column  # every cell has a text
        return [None if v is None else "".join(cell_text(v).split()).upper()[: self.length] for v in values]

    def to_spec(self) -> dict[str, Any]:
        """The rule as in ``spec.data.masking.generalize`` (without the column)."""
        return {"prefix": self.length}


Generalization = DateGeneralization | BandGeneralization | PrefixGeneralization


def generalization_from_spec(rule: Mapping[str, Any]) -> Generalization:
    """One ``spec.data.masking.generalize`` entry (exactly one of date, bandWidth, prefix)."""
    kinds = [key for key in ("date", "bandWidth", "prefix") if key in rule]
    if len(kinds) != 1:
        raise MaskingError(f"generalize {rule.get('column')!r}: set exactly one of date, bandWidth and prefix")
    if "date" in rule:
        if rule["date"] not in ("year", "month"):
            raise MaskingError(f"generalize {rule.get('column')!r}: date must be year or month")
        return DateGeneralization(rule["date"])
    if "bandWidth" in rule:
        if not float(rule["bandWidth"]) > 0:
            raise MaskingError(f"generalize {rule.get('column')!r}: bandWidth must be positive")
        return BandGeneralization(float(rule["bandWidth"]))
    if int(rule["prefix"]) < 1:
        raise MaskingError(f"generalize {rule.get('column')!r}: prefix must be at least 1")
    return PrefixGeneralization(int(rule["prefix"]))


def _date(value: object, column: str, row: int) -> dt.date:
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value.strip())
        except ValueError:
            pass
    raise MaskingError(f"column {column!r}, row {row}: not an ISO 8601 date")


@dataclass(frozen=True)
class Masking:
    """``spec.data.masking``; an empty one keeps every column as it is."""

    drop: tuple[str, ...] = ()
    pseudonymize: tuple[str, ...] = ()
    generalize: Mapping[str, Generalization] = field(default_factory=dict)
    redact: tuple[str, ...] = ()
    phone_regions: tuple[str, ...] = DEFAULT_PHONE_REGIONS

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | None) -> Masking:
        """Parse ``spec.data.masking`` (None: no masking); raises :class:`MaskingError`."""
        if not spec:
            return cls()
        try:
            masking = cls(
                drop=tuple(spec.get("drop", ())),
                pseudonymize=tuple(spec.get("pseudonymize", ())),
                generalize={str(r["column"]): generalization_from_spec(r) for r in spec.get("generalize", ())},
                redact=tuple(spec.get("redact", ())),
                phone_regions=tuple(spec.get("phoneRegions", DEFAULT_PHONE_REGIONS)),
            )
        except (KeyError, TypeError, ValueError) as err:
            if isinstance(err, MaskingError):
                raise
            raise MaskingError(f"malformed spec.data.masking: {type(err).__name__}: {err}") from None
        masking.check()
        return masking

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column a rule names."""
        return (*self.drop, *self.pseudonymize, *self.generalize, *self.redact)

    def check(self, schema: TableSchema | None = None) -> None:
        """No column under two rules; with ``schema``: features and label only generalized, if masked at all."""
        seen: set[str] = set()
        for column in self.columns:
            if column in seen:
                raise MaskingError(f"column {column!r} is named by two masking rules; give it one")
            seen.add(column)
        if schema is None:
            return
        hidden = {*self.drop, *self.pseudonymize, *self.redact}
        for column in (*schema.feature_columns, schema.label.column):
            if column in hidden:
                raise MaskingError(
                    f"column {column!r} is a feature or the label, so it can only be generalized, "
                    "not dropped, pseudonymized or redacted"
                )
        if schema.label.column in self.generalize:
            raise MaskingError(f"the label column {schema.label.column!r} cannot be generalized")

    def view(
        self,
        columns: Mapping[str, Sequence[object]],
        *,
        key: bytes | None = None,
        include: Collection[str] | None = None,
    ) -> dict[str, list[object]]:
        """The masked view of ``columns`` (dropped ones left out), limited to ``include`` if given.

        ``key`` is needed only when a pseudonymized column is in the view; Presidio is loaded only
        when a redacted column is.
        """
        names = [c for c in columns if c not in self.drop and (include is None or c in include)]
        pseudonym = Pseudonymizer(key) if key is not None else None
        redactor = None
        if any(c in self.redact for c in names):
            hidden = (columns[c] for c in (*self.drop, *self.pseudonymize) if c in columns)
            redactor = Redactor(self.phone_regions, (v for values in hidden for v in values))
        out: dict[str, list[object]] = {}
        for name in names:
            values = columns[name]
            if name in self.pseudonymize:
                if pseudonym is None:
                    raise MaskingError(
                        f"column {name!r} is pseudonymized, but no key was given (spec.data.masking.keySecretRef)"
                    )
                out[name] = [pseudonym(v) for v in values]
            elif name in self.generalize:
                out[name] = self.generalize[name].apply(values, name)
            elif redactor is not None and name in self.redact:
                out[name] = [None if v is None else redactor(cell_text(v)) for v in values]
            else:
                out[name] = list(values)
        return out


def check_columns(names: Iterable[str], schema: TableSchema, masking: Masking, where: str) -> None:
    """Every column of the table is declared (label, feature or masking rule) and every declared one exists.

    An undeclared column is refused rather than kept: it could hold identifiers nobody decided about.
    """
    present = list(names)
    declared = {schema.label.column, *schema.feature_columns, *masking.columns}
    for name in present:
        if name not in declared:
            raise SchemaError(
                f"{where}: column {name!r} is not declared; make it a feature or the label, "
                "or name it in spec.data.masking (drop it if it is not needed)"
            )
    for name in sorted(declared - set(present) - {None}, key=str):
        raise SchemaError(f"{where}: has no column {name!r}, which spec.data declares")


class Redactor:
    """Presidio's pattern recognizers, then a list of identifier words; callable on one text.

    The analyzer runs with Presidio's no-op NLP engine (no spaCy model is loaded or downloaded)
    and a registry holding only the recognizers listed in this module's doc; the e-mail
    recognizer checks domains against the public-suffix snapshot bundled with tldextract (no
    download).
    """

    def __init__(self, phone_regions: Sequence[str], identifiers: Iterable[object] = ()) -> None:
        from presidio_analyzer import AnalyzerEngine, RecognizerRegistry  # only the worker image has presidio
        from presidio_analyzer.nlp_engine import NoOpNlpEngine
        from presidio_anonymizer import AnonymizerEngine

        nlp = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}])
        nlp.load()
        registry = RecognizerRegistry(supported_languages=["en"])
        for recognizer in _recognizers(tuple(phone_regions)):
            registry.add_recognizer(recognizer)
        self._analyzer = AnalyzerEngine(registry=registry, nlp_engine=nlp, supported_languages=["en"])
        self._anonymizer = AnonymizerEngine()
        self._words = frozenset(w for value in identifiers if value is not None for w in _identifier_words(value))

    def __call__(self, text: str) -> str:
        """``text`` with every finding replaced by ``<TYPE>`` and identifier words by ``<IDENTIFIER>``."""
        findings = self._analyzer.analyze(text=text, language="en")
        if findings:
            text = self._anonymizer.anonymize(text=text, analyzer_results=findings).text
        return _WORD.sub(lambda m: "<IDENTIFIER>" if m.group().casefold() in self._words else m.group(), text)


def _identifier_words(value: object) -> Iterator[str]:
    for word in _WORD.findall(cell_text(value)):
        if len(word) >= (_MIN_DIGITS if word.isdigit() else _MIN_WORD):
            yield word.casefold()


def _recognizers(phone_regions: tuple[str, ...]) -> list[Any]:
    import tldextract
    from presidio_analyzer import predefined_recognizers as p

    class OfflineEmailRecognizer(p.EmailRecognizer):  # type: ignore[misc]
        """Presidio's e-mail recognizer, validating domains without fetching the public-suffix list."""

        _extract = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

        def validate_result(self, pattern_text: str) -> bool:
            return bool(self._extract(pattern_text).fqdn)

    return [
        OfflineEmailRecognizer(),
        p.PhoneRecognizer(supported_regions=phone_regions),
        p.CreditCardRecognizer(),
        p.IbanRecognizer(),
        p.IpRecognizer(),
        p.UrlRecognizer(),
        p.DateRecognizer(),
        p.UsSsnRecognizer(),
        p.UsItinRecognizer(),
        p.UsPassportRecognizer(),
        p.UsBankRecognizer(),
        p.MedicalLicenseRecognizer(),
        p.NhsRecognizer(),
        p.UkNinoRecognizer(),
        p.UkPassportRecognizer(),
        p.UkPostcodeRecognizer(),
    ]
