"""Counter-based random streams: every draw is a function of (key, row number) alone.

A stream is keyed by (seed, table, column, purpose); the value it gives row r is
SplitMix64's output function applied to key + r * GOLDEN, computed for any array of row
numbers at once. Unlike a sequential generator (numpy's Generator, Philox through
its API), any row can be drawn without the rows before it: a part of a table is
generated alone, a foreign key reads its parent's column at the rows it points to,
and the output does not depend on how the work was split.

Unique values come from keyed permutations: a balanced Feistel network over the
smallest even power of two holding n values, with cycle-walking, maps row numbers
one to one onto [0, n).
"""

import hashlib

import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_SHIFTS = (np.uint64(30), np.uint64(27), np.uint64(31))
FEISTEL_ROUNDS = 4


def stream_key(seed: int, *names: str) -> int:
    """A 64-bit key for the stream of (seed, names…): independent of every other stream."""
    text = "\x1f".join([str(seed), *names]).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little")


def mix(values: np.ndarray) -> np.ndarray:
    """SplitMix64's output function, elementwise, on uint64 (wrapping arithmetic)."""
    z = values.astype(np.uint64, copy=True)
    z ^= z >> _SHIFTS[0]
    z *= _M1
    z ^= z >> _SHIFTS[1]
    z *= _M2
    z ^= z >> _SHIFTS[2]
    return z


def bits(key: int, rows: np.ndarray) -> np.ndarray:
    """64 random bits for each row number of the stream."""
    with np.errstate(over="ignore"):
        return mix(np.uint64(key) + rows.astype(np.uint64) * GOLDEN)


def uniform(key: int, rows: np.ndarray) -> np.ndarray:
    """A float in [0, 1) for each row (53 random bits)."""
    return (bits(key, rows) >> np.uint64(11)).astype(np.float64) * 2.0**-53


# Up to this n a float's 53 bits pick every value; past it, the high 64 bits of bits x n do.
FLOAT_PICKS = 2**53
_LOW32 = np.uint64(0xFFFFFFFF)
_32 = np.uint64(32)


def below(key: int, rows: np.ndarray, n: int) -> np.ndarray:
    """An integer in [0, n) for each row, uniform, every value reachable (n up to 2**63)."""
    if n <= FLOAT_PICKS:
        return np.minimum((uniform(key, rows) * n).astype(np.int64), n - 1)
    return _high_product(bits(key, rows), n).astype(np.int64)


def _high_product(values: np.ndarray, n: int) -> np.ndarray:
    """floor(values * n / 2**64) on uint64, exactly: the 128-bit product in 32-bit limbs."""
    a_lo, a_hi = values & _LOW32, values >> _32
    b_lo, b_hi = np.uint64(n & 0xFFFFFFFF), np.uint64(n >> 32)
    with np.errstate(over="ignore"):
        low_low, low_high = a_lo * b_lo, a_lo * b_hi
        high_low, high_high = a_hi * b_lo, a_hi * b_hi
        middle = (low_low >> _32) + (low_high & _LOW32) + (high_low & _LOW32)
        return high_high + (low_high >> _32) + (high_low >> _32) + (middle >> _32)


def normal(key: int, rows: np.ndarray) -> np.ndarray:
    """A standard normal for each row (Box-Muller on two sub-streams)."""
    u1 = 1.0 - uniform(key, rows)  # (0, 1]: log is finite
    u2 = uniform(key ^ 0x5851F42D4C957F2D, rows)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def permute(key: int, rows: np.ndarray, n: int) -> np.ndarray:
    """A keyed bijection of [0, n) applied to rows (each < n): distinct rows, distinct values."""
    half_bits = max(1, ((n - 1).bit_length() + 1) // 2)
    mask = np.uint64((1 << half_bits) - 1)
    shift = np.uint64(half_bits)
    values = rows.astype(np.uint64)
    keys = [np.uint64(stream_key(key, "feistel", str(r))) for r in range(FEISTEL_ROUNDS)]
    pending = np.ones(len(values), dtype=bool)
    while pending.any():
        # Cycle-walking: a value that lands outside [0, n) is permuted again until inside.
        current = values[pending]
        left, right = current >> shift, current & mask
        with np.errstate(over="ignore"):
            for round_key in keys:
                left, right = right, left ^ (mix(right ^ round_key) & mask)
        values[pending] = (left << shift) | right
        pending = values >= np.uint64(n)
    return values.astype(np.int64)
