"""The bundled locale data (English, from mimesis's datasets, MIT: data/LICENSE-mimesis).

Bundled rather than read from an installed mimesis or Faker: their data changes between
releases, and a generated table must stay the same, byte for byte, for the same seed.
"""

import json
from functools import cache
from pathlib import Path

DATA = Path(__file__).with_name("data") / "en.json"
# Street numbers of an address run 1..9999.
STREET_NUMBERS = 9999
WORD_LISTS = {
    "first_name": "first_names",
    "last_name": "last_names",
    "city": "cities",
    "street": "street_names",
    "word": "words",
}


@cache
def _data() -> dict:
    return json.loads(DATA.read_text(encoding="utf-8"))


@cache
def words(kind: str):
    """The values a word kind takes (first_name, city …), or another list of the data,
    as a pyarrow array (imported here: checking a spec needs only the sizes)."""
    import pyarrow as pa

    return pa.array(_data()[WORD_LISTS.get(kind, kind)], type=pa.string())


@cache
def for_email(kind: str):
    """A word kind's values lowercased, letters only: as an email spells them (see
    columns._for_email: no digits)."""
    import pyarrow.compute as pc

    return pc.replace_substring_regex(pc.utf8_lower(words(kind)), r"[^a-z]", "")


def words_of(kind: str) -> list[str]:
    """The values of a word kind, or another list of the data, as plain strings."""
    return _data()[WORD_LISTS.get(kind, kind)]


def size(kind: str) -> int:
    return len(words_of(kind))


def phone_formats() -> list[str]:
    return _data()["phone_formats"]


def combinations(kind: str) -> int:
    """Distinct values of a composed kind: full names, addresses, phone numbers."""
    if kind == "full_name":
        return size("first_name") * size("last_name")
    if kind == "address":
        return STREET_NUMBERS * size("street") * size("street_suffixes")
    if kind == "phone":
        return len(phone_formats()) * 10 ** phone_formats()[0].count("#")
    raise KeyError(kind)
