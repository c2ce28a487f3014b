"""Scene items are read from Parquet a chunk at a time, and bad input is refused whole."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bulkforge.daemon.errors import InvalidArgument
from bulkforge.daemon.scenes.items import Input
from bulkforge.daemon.scenes.request import Columns


def chunks(path, columns, rows=16_384, start=0):
    return Input(path, columns).chunks(start, rows)


COLUMNS = Columns(key="token", url="image_url", keep=("caption",))


def write(path, rows: int, start: int = 0, row_group: int = 50_000, null_url_every: int = 0):
    keys = [f"scene-{i:08d}" for i in range(start, start + rows)]
    urls = [
        None if null_url_every and i % null_url_every == 0 else f"http://127.0.0.1:9/{i}.jpg"
        for i in range(start, start + rows)
    ]
    table = pa.table({"token": keys, "image_url": urls, "caption": [f"c{i}" for i in range(rows)]})
    pq.write_table(table, path, row_group_size=row_group)
    return keys


def test_items_come_in_chunks_in_input_order_with_their_row_numbers(tmp_path):
    keys = write(tmp_path / "in.parquet", 200_000, null_url_every=1000)
    seen, firsts = [], []
    for chunk in chunks(tmp_path / "in.parquet", COLUMNS, rows=65_536):
        assert len(chunk.keys) == len(chunk.urls) == len(chunk.metas) == chunk.read <= 65_536
        assert json.loads(chunk.metas[0]) == {"caption": f"c{chunk.rows[0] - 1}"}
        firsts.append(chunk.rows[0])
        seen += chunk.keys
    assert seen == keys
    assert firsts == [1 + 65_536 * i for i in range(len(firsts))]
    nulls = sum(u is None for c in chunks(tmp_path / "in.parquet", COLUMNS) for u in c.urls)
    assert nulls == 200  # a null URL is an item that fails later, not a refusal


@pytest.mark.parametrize("start", [0, 1, 49_999, 50_000, 123_457, 199_999, 200_000])
def test_reading_resumes_at_any_row_without_reading_what_is_before(tmp_path, start):
    keys = write(tmp_path / "in.parquet", 200_000)
    resumed = [k for c in chunks(tmp_path / "in.parquet", COLUMNS, start=start) for k in c.keys]
    assert resumed == keys[start:]


def test_rows_without_a_usable_key_are_reported_by_row_not_read_as_items(tmp_path):
    path = tmp_path / "in.parquet"
    table = pa.table({"token": ["a", None, "", "d"], "image_url": ["u"] * 4, "caption": ["c"] * 4})
    pq.write_table(table, path)
    (chunk,) = chunks(path, COLUMNS)
    assert chunk.keys == ["a", "d"] and chunk.rows == [1, 4] and chunk.read == 4
    assert [(r.row, r.why) for r in chunk.rejected] == [
        (2, "no key (null)"),
        (3, "the key is empty or longer than 1024 bytes"),
    ]


def test_a_directory_is_read_file_by_file_in_name_order(tmp_path):
    (tmp_path / "d").mkdir()
    second = write(tmp_path / "d" / "part-1.parquet", 10, start=10)
    first = write(tmp_path / "d" / "part-0.parquet", 10, start=0)
    (tmp_path / "d" / "notes.txt").write_text("ignored")
    keys = [k for c in chunks(tmp_path / "d", COLUMNS) for k in c.keys]
    assert keys == first + second


def test_reading_never_holds_the_whole_input(tmp_path):
    write(tmp_path / "big.parquet", 2_000_000, row_group=100_000)
    size = (tmp_path / "big.parquet").stat().st_size
    peak = 0
    for _chunk in chunks(tmp_path / "big.parquet", Columns("token", "image_url"), rows=65_536):
        peak = max(peak, pa.total_allocated_bytes())
    # The whole key and URL columns are ~110 MB in memory; a chunk and a row group are a few.
    assert peak < 40 * 2**20, (peak, size)


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("missing_column", "no column 'image_url'"),
        ("not_parquet", "not a readable Parquet file"),
        ("empty_dir", "holds no *.parquet"),
        ("relative", "absolute"),
        ("nothing", "no such file"),
    ],
)
def test_unusable_input_is_refused_with_a_reason(tmp_path, setup, expected):
    path = tmp_path / "in.parquet"
    if setup == "missing_column":
        pq.write_table(pa.table({"token": ["a"], "url": ["http://x/"]}), path)
    elif setup == "not_parquet":
        path.write_text("token,image_url\na,http://x/\n")
    elif setup == "empty_dir":
        path = tmp_path / "empty"
        path.mkdir()
    elif setup == "relative":
        path = tmp_path.relative_to(tmp_path.parent) / "x.parquet"
    with pytest.raises(InvalidArgument, match=expected.replace("*", r"\*")):
        for _ in chunks(path, COLUMNS):
            pass
