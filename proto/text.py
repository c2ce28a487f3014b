"""Text that both ends show a person (standard library only, as bfctl starts fast)."""

import difflib
from collections.abc import Iterable

# Control characters (C0, DEL, C1, the Unicode line and paragraph separators) as escapes.
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))} | {
    0x0A: "\\n",
    0x0D: "\\r",
    0x09: "\\t",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}


def one_line(text: str) -> str:
    """text on one line, its control characters escaped: a log line or a terminal line that
    quotes what a client or a remote sent cannot forge another, nor move the cursor."""
    return text.translate(_CONTROL)


def did_you_mean(given: object, known: Iterable[object]) -> str:
    """The "; did you mean 'x'?" of the known name nearest a misspelt one ("" when none is
    near): one rule for bfctl's flags and bfd's fields (a generator, setting, state, kind…)."""
    names = [str(name) for name in known]
    text = str(given)
    near = difflib.get_close_matches(text, names, n=1, cutoff=0.6)
    if not near:  # a case slip (aggtrades) is near whatever the ratio says
        near = [name for name in names if name.lower() == text.lower()][:1]
    return f"; did you mean {near[0]!r}?" if near else ""


def listed(known: Iterable[object], most: int = 30) -> str:
    """The known names, comma-separated, at most `most` of them."""
    names = [str(name) for name in known]
    shown = ", ".join(names[:most])
    return shown + (f" … ({len(names):,} in all)" if len(names) > most else "")


def unknown(what: str, given: object, known: Iterable[object]) -> str:
    """The words for an unknown name: unknown market 'futures' (known: spot, um, cm), with a
    did-you-mean when a known one is near."""
    names = list(known)
    return f"unknown {what} {shown(given)}{did_you_mean(given, names)} (known: {listed(names)})"


def shown(value: object, most: int = 60) -> str:
    """A value as a person typed it, quoted, on one line, cut at `most` characters."""
    text = repr(value)
    return one_line(text if len(text) <= most else text[: most - 1] + "…")


def number(value: float) -> str:
    """A number as people write a bound: 1,000,000,000 and 0.5, never 1e+09."""
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.9f}".rstrip("0").rstrip(".")


def json_problem(exc: ValueError) -> str:
    """What a JSON parser refused, said plainly: "at column 9: expecting a value"."""
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text (byte {exc.start + 1:,})"
    message = str(getattr(exc, "msg", exc))
    lineno, colno = getattr(exc, "lineno", None), getattr(exc, "colno", None)
    where = f" at line {lineno:,}, column {colno:,}" if lineno and colno else ""
    where = f" at column {colno:,}" if lineno == 1 and colno else where
    what = message[:1].lower() + message[1:]
    return f"not valid JSON{where}: {_JSON_WORDS.get(what, what)}"


# Python's words for the common faults, and ours.
_JSON_WORDS = {
    "expecting value": "a value is missing (or a word without quotes)",
    "extra data": "more after the end of the value (one object per line)",
}
