"""Every job kind this daemon runs, one line each: the only place that names them all."""

from bulkforge.daemon.cleaner.kind import CleanKind
from bulkforge.daemon.downloader.kind import DownloadKind
from bulkforge.daemon.generator.kind import GenerateKind
from bulkforge.daemon.pipeline import JobKind, Kinds, Services
from bulkforge.daemon.scenes.kind import ScenesKind
from bulkforge.daemon.store import Schema

KINDS: tuple[type[JobKind], ...] = (
    DownloadKind,
    ScenesKind,
    CleanKind,
    GenerateKind,
)


def build(services: Services) -> Kinds:
    return Kinds(kind(services) for kind in KINDS)


def schemas() -> list[tuple[str, Schema]]:
    """Each kind's tables in this order: the store applies them after the core's."""
    return [(kind.name, kind.tables()) for kind in KINDS]
