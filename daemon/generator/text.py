"""Text built from Arrow arrays, vectorised: what columns and formats both need."""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def join(pieces: list) -> pa.Array:
    """Arrays and literal strings concatenated row by row."""
    arrays = [p if isinstance(p, pa.Array | pa.ChunkedArray) else pa.scalar(p) for p in pieces]
    joined = pc.binary_join_element_wise(*arrays, "")
    return joined.combine_chunks() if isinstance(joined, pa.ChunkedArray) else joined


def decimal(numbers: np.ndarray) -> pa.Array:
    """Integers as decimal strings (Arrow's cast: far faster than numpy's astype(str))."""
    return pc.cast(pa.array(numbers, type=pa.int64()), pa.string())
