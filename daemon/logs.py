"""Logging: human lines on a terminal, one JSON object per line under systemd."""

import logging
import os
import sys

from loguru import logger

from bulkforge.proto.text import one_line


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


def _one_line(record) -> None:
    record["message"] = one_line(record["message"])
