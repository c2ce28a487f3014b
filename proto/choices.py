"""The names a request may hold where only some are known: job states and kinds, failure
steps, the clean kind's Binance kinds and markets, scenes steps and formats, generate
formats, dialects and presets. bfctl refuses an unknown one before it calls bfd (exit 2),
naming the known ones; bfd refuses it too, for other callers. Standard library only (bfctl
starts fast); tests/test_words.py holds these equal to what bfd takes.
"""

import re

from bulkforge.proto.text import listed, unknown

JOB_STATES = ("queued", "running", "paused", "awaiting_swap", "completed", "failed", "cancelled")
JOB_KINDS = ("download", "scenes", "clean", "generate")

# The steps a failed item names, in every kind (a scenes plug-in step is MODULE:FUNCTION):
# plan (a download's file no batch can hold), register (a scenes input row refused), ….
# tests/test_words.py holds them equal to every kind's failure_steps and to the steps the
# daemon's code writes.
FAILURE_STEPS = (
    "plan",
    "register",
    "connect",
    "transfer",
    "verify",
    "rename",
    "fetch",
    "decode",
    "open",
    "parse",
    "schema",
    "write",
    "internal",
)
PLUGIN_STEP = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")

CLEAN_KINDS = ("klines", "aggTrades", "trades")
CLEAN_MARKETS = ("spot", "um", "cm")
# What people call a market where data.binance.vision names it otherwise (futures/um).
ALIASES = {
    "futures": "'um' (USD-M futures) or 'cm' (COIN-M futures)",
    "futures/um": "'um'",
    "futures/cm": "'cm'",
    "usdm": "'um'",
    "coinm": "'cm'",
}
SCENES_STEPS = ("fetch", "verify", "decode")
SCENES_FORMATS = ("files", "webdataset", "parquet")
GENERATE_FORMATS = ("parquet", "csv", "jsonl", "sql")
SQL_DIALECTS = ("sqlite", "postgres", "mysql")
PRESETS = ("courses",)
OVERSIZE = ("fail", "skip", "own-batch")


def check(what: str, given: str, known: tuple[str, ...], plugin: bool = False) -> str:
    """`given` if known (or, with `plugin`, a MODULE:FUNCTION); ValueError naming the known
    ones and the nearest, e.g. "unknown market 'futures' (known: spot, um, cm)"."""
    if given in known or (plugin and PLUGIN_STEP.match(given)):
        return given
    also = (*known, "MODULE:FUNCTION") if plugin else known
    alias = ALIASES.get(given.lower()) if known == CLEAN_MARKETS else None
    if alias:
        raise ValueError(
            f"unknown {what} {given!r}; did you mean {alias}? (known: {listed(known)})"
        )
    raise ValueError(unknown(what, given, also))
