"""How both ends of the API write quantities: sizes, rates, and the limits bfd may change.

bfctl checks every size, rate and limit with these before it calls bfd, so a bad value is
a usage error that says what is wrong; bfd parses its config, flags and requests with the
same functions, so whatever one end accepts the other does too. Standard library only:
bfctl starts fast.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass

from bulkforge.proto.text import did_you_mean, number

_DECIMAL = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "p": 10**15, "e": 10**18}
# 64MiB, 10TB, 1.5g, 512 (bytes); case does not matter. Bits for rates: 100Mbit/s.
UNITS: dict[str, float] = {
    "": 1,
    "b": 1,
    **{prefix: scale for prefix, scale in _DECIMAL.items()},
    **{f"{prefix}b": scale for prefix, scale in _DECIMAL.items()},
    **{f"{prefix}ib": 1024 ** (i + 1) for i, prefix in enumerate(_DECIMAL)},
    "bit": 1 / 8,
    **{f"{prefix}bit": scale / 8 for prefix, scale in _DECIMAL.items()},
}
_QUANTITY = re.compile(r"(\d+(?:\.\d+)?)\s*([A-Za-z]*)")
SIZE_EXAMPLE = "64MiB, 10TB or 512"
RATE_EXAMPLE = "50MB/s or 400Mbit/s"


def parse_size(text: str) -> int:
    """Bytes of a size such as '64MiB' or '1.5GB'; ValueError saying what is wrong."""
    return _bytes(text.strip(), SIZE_EXAMPLE)


def parse_rate(text: str) -> int:
    """Bytes per second of a rate such as '50MB/s' (the '/s' may be left out)."""
    value = text.strip()
    return _bytes(value.removesuffix("/s").rstrip(), RATE_EXAMPLE)


def _bytes(text: str, example: str) -> int:
    match = _QUANTITY.fullmatch(text)
    if text.startswith("-"):
        raise ValueError(f"{shown(text)} is negative; give a size such as {example}")
    if not match or match[2].lower() not in UNITS:
        raise ValueError(f"{shown(text)} is not a size; give e.g. {example}")
    return int(float(match[1]) * UNITS[match[2].lower()])


# What people read: decimal prefixes, the ones `parse_size` reads as powers of 1000, so a
# size given as --space 2MB is shown as 2.00 MB, never 1.9 MiB.
_SHOWN_UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB")


def size_text(count: float) -> str:
    """A size for people: '512 B', '1.50 kB', '12.3 MB', '931 GB' (three figures, decimal
    units). Never '0.0 X': below 1 kB it is whole bytes, and a value rounds into the next
    unit (999,999 B is '1.00 MB', not '1000 kB')."""
    sign, value = ("-", -float(count)) if count < 0 else ("", float(count))
    if value < 999.5:
        return f"{sign}{value:.0f} B"
    for unit in _SHOWN_UNITS[1:]:
        value /= 1000
        digits = 2 if value < 10 else 1 if value < 100 else 0
        shown_value = round(value, digits)
        if shown_value < 1000 or unit == _SHOWN_UNITS[-1]:
            if shown_value >= 100:
                digits = 0
            elif shown_value >= 10:
                digits = min(digits, 1)
            return f"{sign}{shown_value:.{digits}f} {unit}"
    raise AssertionError("unreachable")


def sizes_apart(first: int, second: int) -> tuple[str, str]:
    """Two sizes a message compares (received vs expected): as size_text, unless that shows
    them alike, when each gets its exact bytes too ('1.00 MB (1,000,001 B)')."""
    a, b = size_text(first), size_text(second)
    if a == b and first != second:
        return f"{a} ({first:,} B)", f"{b} ({second:,} B)"
    return a, b


def rate_text(bytes_per_s: float) -> str:
    """A transfer rate for people: size_text per second, never below zero."""
    return f"{size_text(max(0.0, bytes_per_s))}/s"


def count_text(count: int) -> str:
    """A count for people: thousands separated, '655,360'."""
    return f"{count:,}"


def number_text(value: float) -> str:
    """A measured amount for people (a rate, a mean): three figures, never more decimals than
    they need, thousands separated: '0.42', '6.40', '18.3', '201,396'; '<0.01' for a sliver
    above zero and '0' for none (or below: a rate never reads negative)."""
    if value <= 0:
        return "0"
    if value < 0.005:
        return "<0.01"
    digits = 2 if value < 10 else 1 if value < 100 else 0
    shown_value = round(value, digits)
    # 9.996 rounds to 10.00 and 99.96 to 100.0: a figure too many.
    digits = 2 if shown_value < 10 else 1 if shown_value < 100 else 0
    return f"{shown_value:,.{digits}f}"


def per_second_text(per_s: float, unit: str) -> str:
    """Items (files, parts, rows …) per second, named: '6.40 files/s', '201,396 rows/s'."""
    return f"{number_text(per_s)} {unit}/s"


def duration_text(seconds: float) -> str:
    """How long, for people: '0.4 s' and '9.9 s' (a short job is no '0s'), '42 s', '1m05s',
    '2h03m'; '?' for a negative (unknown) one."""
    if seconds < 0:
        return "?"
    if round(seconds, 1) < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole >= 3600:  # to the nearest minute, the last figure shown
        hours, minutes = divmod(round(seconds / 60), 60)
        return f"{hours}h{minutes:02d}m"
    minutes, secs = divmod(whole, 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs} s"


def percent_text(part: float, whole: float, digits: int = 1) -> str:
    """part of whole as a percentage, '-' without a whole. Only exactly all shows 100.0% and
    only exactly none 0.0%: 99.98% is '>99.9%', never '100.0%', and 0.01% is '<0.1%'."""
    if not whole:
        return "-"
    share = 100 * part / whole
    step = 10.0**-digits
    text = f"{share:.{digits}f}"
    if text == f"{100:.{digits}f}" and part != whole:
        return f">{100 - step:.{digits}f}%" if part < whole else f">{100:.{digits}f}%"
    if text in (f"{0:.{digits}f}", f"-{0:.{digits}f}") and part:
        return f"<{step:.{digits}f}%" if part > 0 else f"<{0:.{digits}f}%"
    return f"{text}%"


def shown(text: str, limit: int = 40) -> str:
    """The value as given, quoted and cut short: a refusal must not echo a megabyte back."""
    return repr(text if len(text) <= limit else text[:limit] + "…")


def parse_count(text: str, low: int, high: int | None = None) -> int:
    """A whole number in [low, high]."""
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"{shown(text)} is not a whole number") from None
    return _within(value, low, high)


def parse_fraction(text: str) -> float:
    """A share in (0, 1], such as 0.9."""
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError(f"{shown(text)} is not a number; give a share such as 0.9") from None
    if not 0 < value <= 1:
        raise ValueError(f"{number(value)} is not in (0, 1]; give a share such as 0.9")
    return value


def _within(value: int, low: int, high: int | None) -> int:
    if value < low or (high is not None and value > high):
        bounds = (
            f"at least {number(low)}" if high is None else f"from {number(low)} to {number(high)}"
        )
        raise ValueError(f"{value} is out of range: give a number {bounds}")
    return value


@dataclass(frozen=True)
class Limit:
    """One limit `bfctl system --set` may change while bfd runs."""

    parse: Callable[[str], int | float]
    example: str


def _count(low: int, high: int) -> Callable[[str], int]:
    return lambda text: parse_count(text, low, high)


LIMITS: dict[str, Limit] = {
    "bandwidth": Limit(parse_rate, "bandwidth=50MB/s (0: no cap)"),
    "disk_threshold": Limit(parse_fraction, "disk_threshold=0.8"),
    "memory_cap": Limit(parse_size, "memory_cap=4GiB (0: no cap)"),
    "cpu_workers": Limit(_count(1, 1024), "cpu_workers=4"),
    "max_connections": Limit(_count(1, 1024), "max_connections=32"),
    "per_host_connections": Limit(_count(1, 1024), "per_host_connections=8"),
    "transfer_workers": Limit(_count(1, 64), "transfer_workers=2"),
}


def parse_limit(key: str, text: str) -> int | float:
    """The value of one `system --set KEY=VALUE`; ValueError naming the limits there are."""
    limit = LIMITS.get(key)
    if limit is None:
        known = ", ".join(LIMITS)
        near = did_you_mean(key, LIMITS)
        raise ValueError(f"{shown(key)} is not a limit bfd has{near} (the limits are {known})")
    try:
        return limit.parse(text)
    except ValueError as exc:
        raise ValueError(f"{key}: {exc} (e.g. {limit.example})") from None


# Bounds of request fields: bfctl refuses a flag outside them, bfd a request.
MAX_SHARD_SIZE = 1_000_000  # items per shard
MAX_ITEM_SIZE = 2 * 1024**3  # bytes one scenes item may have
MAX_FETCH_TIMEOUT_S = 3600  # seconds per scenes fetch attempt
MAX_ROWS = 10**10  # rows a generate job scales to
MAX_CHUNK_ROWS = 100_000_000  # rows per generated part file
MAX_SEED = 2**63 - 1
MAX_FAILURES_LIMIT = 10_000  # failed items one `failures` answer lists
MAX_LARGEST = 10_000  # largest files one `analyze` answer lists


def host_port(address: str, lowest: int = 0) -> str:
    """HOST:PORT with a port lowest-65535, else ValueError saying so: a port past 65535
    would wrap around in the socket layer and bind or dial somewhere unexpected. A listener
    may take 0 (any free port); a client dials a server, which none is on port 0 (lowest=1)."""
    host, colon, port = address.rpartition(":")
    if not colon or not host.strip("[]") or not port.isdigit() or not lowest <= int(port) <= 65535:
        raise ValueError(f"{address!r} is not HOST:PORT with a port from {lowest} to 65535")
    return address
