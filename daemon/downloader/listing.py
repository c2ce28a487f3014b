"""Every download source as a stream of pages of file entries.

Runs in a worker thread, one page per call of next(): the pages go to the store
as they come, so no listing is ever held whole in memory.
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from bulkforge.daemon.downloader.manifest import FileEntry, entries_from_urls, read_manifest
from bulkforge.daemon.errors import InvalidArgument

PAGE_ROWS = 10_000


@dataclass(frozen=True)
class Source:
    """Where a download's files come from: exactly one of manifest, urls, s3, hf."""

    manifest: Path | None = None
    urls: tuple[str, ...] = ()
    s3: str | None = None
    hf: str | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def spec(self) -> dict:
        if self.manifest:
            source: dict = {"manifest": str(self.manifest)}
        elif self.urls:
            source = {"urls": list(self.urls)}
        else:
            source = {"s3": self.s3} if self.s3 else {"hf": self.hf}
        if self.include or self.exclude:
            source |= {"include": list(self.include), "exclude": list(self.exclude)}
        return source


@dataclass(frozen=True)
class Batching:
    """How a download is cut into disk batches: the submit flags, validated."""

    # Bytes one disk offers, or "auto": the free space of dest at submit.
    space: int | str
    margin: float
    oversize: str
    auto_proceed: bool

    def spec(self) -> dict:
        return {
            "space": self.space,
            "margin": self.margin,
            "oversize": self.oversize,
            "auto": self.auto_proceed,
        }

    @classmethod
    def of_spec(cls, spec: dict) -> "Batching | None":
        """The batching a job was submitted with (its stored spec), or None: one batch."""
        given = spec.get("batching")
        if not given:
            return None
        return cls(given["space"], given["margin"], given["oversize"], given["auto"])


@dataclass(frozen=True)
class DownloadRequest:
    name: str
    dest: Path
    source: Source
    batching: Batching | None = None

    def spec(self) -> dict:
        """The parameters a resubmission must repeat to be the same job."""
        spec = {"kind": "download", "source": self.source.spec(), "dest": str(self.dest)}
        if self.batching is not None:
            spec["batching"] = self.batching.spec()
        return spec


def pages_of(entries: Iterable[FileEntry], rows: int = PAGE_ROWS) -> Iterator[list[FileEntry]]:
    iterator = iter(entries)
    while page := list(islice(iterator, rows)):
        yield page


def source_pages(source: Source) -> Iterator[list[FileEntry]]:
    """The source's files, page by page; listing sources are imported only when used."""
    if (source.include or source.exclude) and not (source.s3 or source.hf):
        raise InvalidArgument("include and exclude filter the s3 and hf listings only")
    if source.manifest:
        yield from pages_of(read_manifest(source.manifest))
    elif source.urls:
        yield from pages_of(entries_from_urls(list(source.urls)))
    elif source.s3:
        from bulkforge.daemon.downloader.sources.binance import pair_checksum_pages
        from bulkforge.daemon.downloader.sources.s3 import S3Listing, parse_s3_url

        listing = S3Listing(parse_s3_url(source.s3), source.include, source.exclude)
        yield from pair_checksum_pages(listing.pages())
    elif source.hf:
        from bulkforge.daemon.downloader.sources.hf import HFRepo, parse_hf_ref

        repo = HFRepo(parse_hf_ref(source.hf), source.include, source.exclude)
        yield from repo.pages(repo.pin())
    else:
        raise InvalidArgument("give exactly one source: manifest, urls, s3 or hf")
