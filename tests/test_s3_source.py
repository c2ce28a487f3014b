"""S3 listings against a real S3 implementation (moto's server) on 127.0.0.1, and the
data.binance.vision helpers.

Our code reads credentials only from the environment, exactly as bfd would; the tests set
dummy ones with monkeypatch, or none at all for the anonymous case.
"""

import hashlib
import socket
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest
from conftest import admin_client

from bulkforge.daemon.downloader.manifest import FileEntry
from bulkforge.daemon.downloader.sources.binance import (
    pair_checksum_pages,
    pair_checksums,
    parse_checksum_file,
)
from bulkforge.daemon.downloader.sources.s3 import (
    S3Listing,
    S3Location,
    listing_refusal,
    parse_s3_url,
)
from bulkforge.daemon.errors import InvalidArgument, SourceUnavailable

# moto serves ~200 PUTs/s here, so 1,100 keys (two pages) is "past 1,000" at an affordable cost.
BIG_BUCKET_KEYS = 1100
DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
SHA = "a" * 64


@pytest.fixture(autouse=True)
def aws_environment(monkeypatch, tmp_path: Path) -> None:
    """Dummy credentials, and nothing from the host's ~/.aws or an instance role."""
    for name, value in DUMMY_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def new_bucket(endpoint: str, objects: dict[str, bytes]) -> str:
    client = admin_client(endpoint)
    name = f"bkt-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda kv: client.put_object(Bucket=name, Key=kv[0], Body=kv[1]), objects.items()
            )
        )
    return name


def listing(endpoint: str, bucket: str, prefix: str = "", **options) -> S3Listing:
    return S3Listing(parse_s3_url(f"{endpoint}/{bucket}/{prefix}"), **options)


def listed(endpoint: str, bucket: str, prefix: str = "", **options) -> list[FileEntry]:
    return [
        entry for page in listing(endpoint, bucket, prefix, **options).pages() for entry in page
    ]


@pytest.fixture(scope="session")
def big_bucket(moto_endpoint: str) -> str:
    return new_bucket(
        moto_endpoint, {f"big/part-{i:05d}.bin": b"x" for i in range(BIG_BUCKET_KEYS)}
    )


# --- parse_s3_url ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "http://127.0.0.1:9000/bucket/data/1m/",
            S3Location("http://127.0.0.1:9000", "bucket", "data/1m/"),
        ),
        (
            "http://127.0.0.1:9000/bucket/data/1m",
            S3Location("http://127.0.0.1:9000", "bucket", "data/1m/"),
        ),
        (
            "https://s3.example.org/data.binance.vision",
            S3Location("https://s3.example.org", "data.binance.vision", ""),
        ),
        ("https://s3.example.org/bkt/", S3Location("https://s3.example.org", "bkt", "")),
        ("http://h/bkt/with%20space/", S3Location("http://h", "bkt", "with space/")),
    ],
)
def test_parse_s3_url(url: str, expected: S3Location):
    assert parse_s3_url(url) == expected


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("s3://bucket/prefix", "s3:// names no endpoint"),
        ("ftp://host/bucket", "not an http(s) URL"),
        ("bucket/prefix", "not an http(s) URL"),
        ("http://host:9000/", "no bucket"),
        ("http://host:9000", "no bucket"),
        ("http://host/bucket/p?delimiter=/", "query or fragment"),
        ("http://key:secret@host/bucket", "credentials in the URL"),
        ("http://host:99999/bucket", "port"),
        ("http://host/b/", "not a bucket name"),
    ],
)
def test_parse_s3_url_refuses_with_a_reason(url: str, complaint: str):
    with pytest.raises(InvalidArgument, match=r"^s3 ") as refused:
        parse_s3_url(url)
    assert complaint in str(refused.value)


# --- listings against moto ------------------------------------------------------------------


def test_pages_past_1000_keys_are_fetched_lazily(moto_endpoint: str, big_bucket: str):
    pages = listing(moto_endpoint, big_bucket, "big").pages()
    first = next(pages)
    # Added after the first page was handed over: it shows up only if the later pages
    # are requested after that, i.e. the listing was never read whole up front.
    late_key = "big/zz-late.bin"
    admin_client(moto_endpoint).put_object(Bucket=big_bucket, Key=late_key, Body=b"late")
    try:
        rest = list(pages)
    finally:
        admin_client(moto_endpoint).delete_object(Bucket=big_bucket, Key=late_key)
    sizes = [len(page) for page in [first, *rest]]
    assert sizes == [1000, BIG_BUCKET_KEYS + 1 - 1000]
    paths = [entry.path for page in [first, *rest] for entry in page]
    expected = [f"part-{i:05d}.bin" for i in range(BIG_BUCKET_KEYS)] + ["zz-late.bin"]
    assert paths == expected


def test_small_page_size_pages_through_everything(moto_endpoint: str, big_bucket: str):
    pages = list(listing(moto_endpoint, big_bucket, "big", page_size=300).pages())
    assert [len(page) for page in pages] == [300, 300, 300, 200]


def test_prefix_is_a_folder_and_paths_are_relative_to_it(moto_endpoint: str):
    objects = {
        "data/a.txt": b"a",
        "data/sub/b.txt": b"bb",
        "data/sub/deeper/c d.txt": b"ccc",
        "data-sibling/no.txt": b"no",
        "other/no.txt": b"no",
    }
    bucket = new_bucket(moto_endpoint, objects)
    entries = {entry.path: entry for entry in listed(moto_endpoint, bucket, "data")}
    assert sorted(entries) == ["a.txt", "sub/b.txt", "sub/deeper/c d.txt"]
    spaced = entries["sub/deeper/c d.txt"]
    assert spaced.url == f"{moto_endpoint}/{bucket}/data/sub/deeper/c%20d.txt"
    # The URL is one a plain HTTP client can fetch as it is, once the object is public.
    admin_client(moto_endpoint).put_object_acl(
        Bucket=bucket, Key="data/sub/deeper/c d.txt", ACL="public-read"
    )
    with urllib.request.urlopen(spaced.url, timeout=10) as response:
        assert response.read() == b"ccc"
    whole = sorted(entry.path for entry in listed(moto_endpoint, bucket))
    assert whole == sorted(objects)


def test_single_part_etag_is_the_md5_and_multipart_has_none(moto_endpoint: str):
    content = b"some bytes to hash" * 1000
    bucket = new_bucket(moto_endpoint, {"plain.bin": content})
    client = admin_client(moto_endpoint)
    part = b"p" * (5 * 1024 * 1024)  # S3's smallest allowed part, but the last
    upload = client.create_multipart_upload(Bucket=bucket, Key="multi.bin")
    etags = [
        client.upload_part(
            Bucket=bucket, Key="multi.bin", UploadId=upload["UploadId"], PartNumber=n, Body=body
        )["ETag"]
        for n, body in ((1, part), (2, b"tail"))
    ]
    client.complete_multipart_upload(
        Bucket=bucket,
        Key="multi.bin",
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"ETag": e, "PartNumber": n} for n, e in enumerate(etags, 1)]},
    )
    entries = {entry.path: entry for entry in listed(moto_endpoint, bucket)}
    plain = entries["plain.bin"]
    assert plain.md5 == plain.etag == hashlib.md5(content).hexdigest()
    assert (plain.size, plain.sha256, plain.checksum_url) == (len(content), None, None)
    multi = entries["multi.bin"]
    assert multi.etag.endswith("-2") and '"' not in multi.etag
    assert (multi.md5, multi.size) == (None, len(part) + 4)


def test_directory_markers_are_skipped(moto_endpoint: str):
    bucket = new_bucket(moto_endpoint, {"d/": b"", "d/e/": b"", "d/e/f.txt": b"f"})
    assert [entry.path for entry in listed(moto_endpoint, bucket)] == ["d/e/f.txt"]


def test_include_and_exclude_globs_match_the_relative_path(moto_endpoint: str):
    names = ["a/x.zip", "a/x.zip.CHECKSUM", "a/y.csv", "b/z.zip", "top.zip"]
    bucket = new_bucket(moto_endpoint, {f"p/{name}": b"1" for name in names})

    def paths(**globs) -> list[str]:
        return [entry.path for entry in listed(moto_endpoint, bucket, "p/", **globs)]

    assert paths() == names
    assert paths(include=["*.zip"]) == ["a/x.zip", "b/z.zip", "top.zip"]
    assert paths(include=["a/*"], exclude=["*.csv"]) == ["a/x.zip", "a/x.zip.CHECKSUM"]
    assert paths(exclude=["b/*", "*.CHECKSUM"]) == ["a/x.zip", "a/y.csv", "top.zip"]
    with pytest.raises(InvalidArgument, match=r"no objects to fetch .* include \['\*\.parquet'\]"):
        paths(include=["*.parquet"])


def test_a_key_escaping_the_destination_refuses_the_listing(moto_endpoint: str):
    bucket = new_bucket(moto_endpoint, {"data/ok.txt": b"1", "data/../evil.txt": b"2"})
    with pytest.raises(InvalidArgument) as refused:
        listed(moto_endpoint, bucket, "data")
    message = str(refused.value)
    assert "'data/../evil.txt'" in message and "escapes the destination" in message
    assert "Traceback" not in message
    # The operator's way around it: exclude the key, fetch the rest.
    kept = listed(moto_endpoint, bucket, "data", exclude=["../*"])
    assert [entry.path for entry in kept] == ["ok.txt"]


def test_a_missing_bucket_is_a_clear_refusal(moto_endpoint: str):
    with pytest.raises(InvalidArgument, match=r"no bucket 'no-such-bucket' at http://127\.0\.0\.1"):
        listed(moto_endpoint, "no-such-bucket")


def test_an_empty_prefix_is_refused_rather_than_an_empty_job(moto_endpoint: str):
    bucket = new_bucket(moto_endpoint, {"data/a.txt": b"1"})
    with pytest.raises(InvalidArgument, match=r"no objects to fetch under .*/typo/"):
        listed(moto_endpoint, bucket, "typo")


@pytest.mark.parametrize(
    ("code", "status", "refusal", "advice"),
    [
        ("AccessDenied", 403, InvalidArgument, "AWS_ACCESS_KEY_ID"),
        ("InvalidAccessKeyId", 403, InvalidArgument, "AWS_ACCESS_KEY_ID"),
        ("PermanentRedirect", 301, InvalidArgument, "AWS_REGION"),
        ("InternalError", 500, SourceUnavailable, "try again later"),
        ("SlowDown", 503, SourceUnavailable, "try again later"),
        ("InvalidArgument", 400, InvalidArgument, "InvalidArgument: the message"),
    ],
)
def test_error_responses_moto_cannot_produce_map_to_advice(code, status, refusal, advice):
    # moto's server never denies a listing, so these codes are fed in as S3 would send them.
    response = {
        "Error": {"Code": code, "Message": "the message"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    refused = listing_refusal(parse_s3_url("http://127.0.0.1:9/bucket/p/"), response)
    assert type(refused) is refusal
    assert advice in str(refused) and "http://127.0.0.1:9/bucket/p/" in str(refused)


def test_an_unreachable_endpoint_is_unavailable():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port once the probe is closed.
    with pytest.raises(SourceUnavailable, match=f"cannot reach http://127.0.0.1:{port}"):
        listed(f"http://127.0.0.1:{port}", "bucket")


def test_anonymous_listing_without_any_credentials(moto_endpoint: str, monkeypatch):
    bucket = new_bucket(moto_endpoint, {"pub/a.zip": b"1"})
    for name in DUMMY_CREDENTIALS:
        monkeypatch.delenv(name)
    assert boto3.session.Session().get_credentials() is None
    # A signed client would stop at NoCredentialsError before sending anything; moto's
    # server does not enforce ACLs, so an answer here means the request went unsigned.
    assert [entry.path for entry in listed(moto_endpoint, bucket, "pub")] == ["a.zip"]


def test_half_a_credential_pair_is_refused(moto_endpoint: str, monkeypatch):
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(InvalidArgument, match="credentials in bfd's environment are unusable"):
        listed(moto_endpoint, "any-bucket")


# --- data.binance.vision ----------------------------------------------------------------------


def entry(path: str) -> FileEntry:
    return FileEntry(url=f"http://h/b/{path}", path=path, size=1, sha256=None, md5=None, etag=None)


def checksum_urls(entries: list[FileEntry]) -> dict[str, str | None]:
    return {e.path: e.checksum_url for e in entries}


def test_pair_checksums_across_a_page_boundary():
    pages = [
        [entry("1.zip"), entry("1.zip.CHECKSUM"), entry("2.zip")],
        [entry("2.zip.CHECKSUM"), entry("3.zip")],
        [],
        [entry("4.zip"), entry("4.zip.CHECKSUM")],
    ]
    out_pages = list(pair_checksum_pages(pages))
    flat = [e for page in out_pages for e in page]
    assert [e.path for e in flat] == [e.path for page in pages for e in page]
    assert checksum_urls(flat) == {
        "1.zip": "http://h/b/1.zip.CHECKSUM",
        "1.zip.CHECKSUM": None,
        "2.zip": "http://h/b/2.zip.CHECKSUM",
        "2.zip.CHECKSUM": None,
        "3.zip": None,
        "4.zip": "http://h/b/4.zip.CHECKSUM",
        "4.zip.CHECKSUM": None,
    }
    assert all(len(page) <= 3 for page in out_pages)
    assert checksum_urls(pair_checksums(e for page in pages for e in page)) == checksum_urls(flat)


def test_pair_checksums_on_a_binance_layout_listed_two_keys_a_page(moto_endpoint: str):
    days = [f"BTCUSDT-1m-2024-01-0{day}.zip" for day in range(1, 6)]
    objects = {}
    for name in days:
        objects[f"data/spot/daily/klines/BTCUSDT/1m/{name}"] = b"zip"
        objects[f"data/spot/daily/klines/BTCUSDT/1m/{name}.CHECKSUM"] = b"sum"
    del objects[f"data/spot/daily/klines/BTCUSDT/1m/{days[2]}.CHECKSUM"]
    bucket = new_bucket(moto_endpoint, objects)
    source = listing(moto_endpoint, bucket, "data/spot/daily/klines/BTCUSDT/1m/", page_size=2)
    flat = [e for page in pair_checksum_pages(source.pages()) for e in page]
    assert len(flat) == 9
    for e in flat:
        if e.path.endswith(".zip") and e.path != days[2]:
            assert e.checksum_url == e.url + ".CHECKSUM"
        else:
            assert e.checksum_url is None, e.path


@pytest.mark.parametrize(
    "text",
    [
        f"{SHA}  BTCUSDT-1m-2024-01-01.zip\n",
        f"{SHA} *BTCUSDT-1m-2024-01-01.zip",
        f"\ufeff{SHA.upper()}  BTCUSDT-1m-2024-01-01.zip\r\n",
        f"{'b' * 64}  other.zip\n{SHA}  ./BTCUSDT-1m-2024-01-01.zip\n",
    ],
)
def test_parse_checksum_file_accepts_sha256sum_format(text: str):
    assert parse_checksum_file(text, "data/spot/BTCUSDT-1m-2024-01-01.zip") == SHA


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("", "is empty"),
        ("  \n", "is empty"),
        (SHA, "is not '<64 hex digits>  <name>'"),
        (f"{'a' * 63}  x.zip", "is not '<64 hex digits>  <name>'"),
        (f"{'a' * 65}  x.zip", "is not '<64 hex digits>  <name>'"),
        (f"{'g' * 64}  x.zip", "is not '<64 hex digits>  <name>'"),
        ("<html>Access Denied</html>", "is not '<64 hex digits>  <name>'"),
        (f"{SHA}  y.zip", "names 'y.zip', not 'x.zip'"),
    ],
)
def test_parse_checksum_file_refuses_with_a_reason(text: str, complaint: str):
    with pytest.raises(ValueError) as refused:
        parse_checksum_file(text, "x.zip")
    assert complaint in str(refused.value)
