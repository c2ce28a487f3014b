"""Logging: human lines on a terminal, one JSON object per line under systemd."""

import logging
import os
import sys

from loguru import logger


def setup_logging(level: str, log_format: str) -> None:
    under_systemd = bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))
    as_json = log_format == "json" or (log_format == "auto" and under_systemd)
    logger.remove()
    if as_json:
        logger.add(sys.stderr, level=level, serialize=True, backtrace=False, diagnose=False)
    else:
        # A message is one line whatever it quotes: a client's text (a job or column name
        # with a newline) cannot forge a line of its own.
        logger.configure(patcher=_one_line)
        logger.add(
            sys.stderr,
            level=level,
            format="{time:YYYY-MM-DD HH:mm:ss.SSS} {level: <7} {message}",
            backtrace=False,
            diagnose=False,
        )
    # httpx logs one INFO line per request: far too much for millions of files.
    logging.getLogger("httpx").setLevel(logging.WARNING)


# Control characters (C0, DEL, C1 and the Unicode line and paragraph separators) as escapes.
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))} | {
    0x0A: "\\n",
    0x0D: "\\r",
    0x09: "\\t",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}


def _one_line(record) -> None:
    record["message"] = record["message"].translate(_CONTROL)
