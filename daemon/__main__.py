"""`bfd` on the command line: parse flags, load settings, run."""

import argparse
import sys
import tomllib
from pathlib import Path

from loguru import logger
from pydantic import ValidationError

from bulkforge.daemon.app import EXIT_CONFIG, run
from bulkforge.daemon.logs import setup_logging
from bulkforge.daemon.settings import DEFAULT_CONFIG, Settings, UnknownVariable, load_settings
from bulkforge.daemon.validation import describe
from bulkforge.proto.arguments import Parser


def parser() -> argparse.ArgumentParser:
    flags = Parser(
        prog="bfd",
        description="The bulkforge daemon. Settings: flags > BULKFORGE_* environment > "
        "TOML config (--config, default /etc/bulkforge/bfd.toml when present) > defaults.",
        argument_default=None,
    )
    flags.add_argument("--config", type=Path, help="TOML settings file")
    flags.add_argument("--state-dir", type=Path, help="directory of the state database")
    flags.add_argument("--socket", type=Path, help="unix socket of the gRPC API")
    flags.add_argument("--listen", metavar="HOST:PORT", help="also serve gRPC over TLS here")
    flags.add_argument("--metrics", metavar="HOST:PORT", help="serve Prometheus metrics here")
    flags.add_argument("--max-watches", type=int, metavar="N", help="watch streams at once (64)")
    flags.add_argument("--tls-cert", type=Path, help="PEM certificate for --listen")
    flags.add_argument("--tls-key", type=Path, help="PEM private key for --listen")
    flags.add_argument(
        "--tls-client-ca", type=Path, help="with --listen: demand client certificates of this CA"
    )
    flags.add_argument(
        "--token-file", type=Path, help="with --listen: the bearer token every TCP call carries"
    )
    flags.add_argument(
        "--allow-unauthenticated",
        action="store_const",
        const=True,
        help="let --listen serve a non-loopback address without a token or a client CA",
    )
    flags.add_argument(
        "--listen-max-connections", type=int, metavar="N", help="TCP connections at once (256)"
    )
    flags.add_argument(
        "--listen-handshake-timeout",
        type=float,
        metavar="S",
        help="seconds a TCP connection has for its TLS handshake (10)",
    )
    flags.add_argument(
        "--data-root",
        dest="data_roots",
        action="append",
        type=Path,
        metavar="DIR",
        help="jobs may write under DIR only (repeatable; default /, minus system directories)",
    )
    flags.add_argument(
        "--plugin-step",
        dest="plugin_steps",
        action="append",
        metavar="MODULE:FUNCTION",
        help="a plug-in step scenes jobs may name (repeatable); nothing else is imported",
    )
    flags.add_argument("--memory-cap", metavar="SIZE", help="e.g. 2GiB")
    flags.add_argument("--cpu-workers", type=int, metavar="N")
    flags.add_argument("--disk-threshold", type=float, metavar="FRACTION", help="e.g. 0.9")
    flags.add_argument("--bandwidth", metavar="RATE", help="e.g. 100MB/s; 0 = no cap")
    flags.add_argument("--max-connections", type=int, metavar="N", help="concurrent transfers")
    flags.add_argument("--per-host-connections", type=int, metavar="N", help="per origin host")
    flags.add_argument(
        "--transfer-workers", type=int, metavar="N", help="processes carrying the bytes"
    )
    flags.add_argument("--segment-size", metavar="SIZE", help="parallel range size, e.g. 32MiB")
    flags.add_argument("--segments-per-file", type=int, metavar="N", help="ranges at once")
    flags.add_argument("--max-attempts", type=int, metavar="N", help="attempts per file")
    flags.add_argument("--retry-base-delay", type=float, metavar="S")
    flags.add_argument("--retry-max-delay", type=float, metavar="S")
    flags.add_argument("--read-timeout", type=float, metavar="S")
    flags.add_argument("--connect-timeout", type=float, metavar="S")
    flags.add_argument("--drain-timeout", type=float, metavar="S")
    flags.add_argument("--log-level", choices=["TRACE", "DEBUG", "INFO", "WARNING", "ERROR"])
    flags.add_argument("--log-format", choices=["auto", "human", "json"])
    return flags


def main(argv: list[str] | None = None) -> None:
    args = vars(parser().parse_args(argv))
    config = args.pop("config")
    setup_logging(args.get("log_level") or "INFO", args.get("log_format") or "auto")
    try:
        settings = load_settings(args, config)
    except (FileNotFoundError, UnknownVariable) as exc:
        logger.error("{}", exc)
        sys.exit(EXIT_CONFIG)
    except tomllib.TOMLDecodeError as exc:
        logger.error("config file {}: not valid TOML ({})", config or DEFAULT_CONFIG, exc)
        sys.exit(EXIT_CONFIG)
    except (OSError, UnicodeDecodeError) as exc:
        logger.error("config file {}: cannot be read ({})", config or DEFAULT_CONFIG, exc)
        sys.exit(EXIT_CONFIG)
    except ValidationError as exc:
        source = config or (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
        where = f"{source}, BULKFORGE_* variables or flags" if source else "flags or BULKFORGE_*"
        words = describe(exc, model=Settings, what="setting")
        logger.error("bad settings (from {}): {}", where, words)
        sys.exit(EXIT_CONFIG)
    setup_logging(settings.log_level, settings.log_format)
    sys.exit(run(settings))


if __name__ == "__main__":
    main()
