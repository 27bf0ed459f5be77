"""The Merkle tree (默克尔树) over the audit records, hashed as RFC 6962 / RFC 9162 §2.1, and
stored as Go's checksum database stores its tree (``golang.org/x/mod/sumdb/tlog``).

Leaf ``i`` is the record at position ``i`` in ``seq`` order. Its leaf data is the 32 bytes of the
record's chain ``hash``: that hash already commits to the record's canonical form (whatever its
version) and to every record before it, so a verifier needs no copy of the canonical encoding, and
the bytes are what the API shows as ``hash``.

Storage: every hash of a complete subtree is kept once, at ``stored_hash_index(level, n)`` — the
n-th subtree of 2**level leaves — so leaf ``i`` writes its leaf hash and the hashes of the subtrees
it completes, and a root or a proof reads O(log n) stored hashes. Pure functions: no I/O here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()  # RFC 9162 §2.1.1: MTH({}) = HASH()

# Reads stored hashes by index, in the order asked.
Reader = Callable[[Sequence[int]], Sequence[bytes]]


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def stored_hash_index(level: int, n: int) -> int:
    """Where the n-th hash at ``level`` is stored (tlog.StoredHashIndex)."""
    for _ in range(level):
        n = 2 * n + 1
    i = 0
    while n > 0:
        i += n
        n >>= 1
    return i + level


def stored_hash_count(size: int) -> int:
    """How many hashes a tree of ``size`` leaves stores (tlog.StoredHashCount)."""
    if size == 0:
        return 0
    count = stored_hash_index(0, size - 1) + 1
    i = size - 1
    while i & 1:
        count += 1
        i >>= 1
    return count


def _maxpow2(n: int) -> tuple[int, int]:
    """(k, log2 k): the largest power of two smaller than n."""
    level = 0
    while 1 << (level + 1) < n:
        level += 1
    return 1 << level, level


def _subtrees(lo: int, hi: int) -> list[tuple[int, int]]:
    """[lo, hi) as complete subtrees, left to right: (level, n) of each."""
    out = []
    while lo < hi:
        k, level = _maxpow2(hi - lo + 1)
        assert lo & (k - 1) == 0, "unaligned range"
        out.append((level, lo >> level))
        lo += k
    return out


class Frontier:
    """The right edge of a tree (its complete subtrees, largest first): enough to append leaves
    and to compute the root, in O(log n) memory."""

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        self.size = size
        self._stack: list[tuple[int, bytes]] = [
            (level, h) for (level, _), h in zip(_subtrees(0, size), hashes, strict=True)
        ]

    @staticmethod
    def indexes(size: int) -> list[int]:
        """The stored hashes a frontier of a tree of ``size`` leaves is built from."""
        return [stored_hash_index(level, n) for level, n in _subtrees(0, size)]

    def append(self, data: bytes) -> list[bytes]:
        """Add a leaf; returns the hashes it stores, from ``stored_hash_index(0, old size)`` on
        (its leaf hash, then each subtree it completes: tlog.StoredHashesForRecordHash)."""
        h = leaf_hash(data)
        new = [h]
        level = 0
        while self._stack and self._stack[-1][0] == level:
            _, left = self._stack.pop()
            h = node_hash(left, h)
            level += 1
            new.append(h)
        self._stack.append((level, h))
        self.size += 1
        return new

    def hashes(self) -> list[bytes]:
        """Its complete subtrees' hashes, largest first: ``Frontier(size, f.hashes())`` is ``f``."""
        return [h for _, h in self._stack]

    def blocks(self) -> dict[tuple[int, int], bytes]:
        """Its complete subtrees, keyed by the leaf range [lo, hi) each covers (for root_from_pieces)."""
        out, lo = {}, 0
        for level, h in self._stack:
            out[(lo, lo + (1 << level))] = h
            lo += 1 << level
        return out

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        h = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            h = node_hash(left, h)
        return h


# --------------------------------------------------------------------------- roots and proofs
# Each proof is computed twice: once with a reader that only records which stored hashes are
# needed, then with those hashes fetched in one query. The shape of a proof never depends on the
# hash values, so the two runs ask for the same indexes in the same order.


def _subtree_hash(lo: int, hi: int, read: Reader) -> bytes:
    """MTH(D[lo:hi]) from stored hashes."""
    parts = _subtrees(lo, hi)
    hashes = read([stored_hash_index(level, n) for level, n in parts])
    h = hashes[-1]
    for left in reversed(hashes[:-1]):
        h = node_hash(left, h)
    return h


def tree_hash(size: int, read: Reader) -> bytes:
    return EMPTY_ROOT if size == 0 else _subtree_hash(0, size, read)


def _path(m: int, lo: int, hi: int, read: Reader) -> list[bytes]:
    """RFC 9162 §2.1.3.1 PATH(m, D[lo:hi]), leaf to root."""
    if hi - lo == 1:
        return []
    k, _ = _maxpow2(hi - lo)
    if m < lo + k:
        return [*_path(m, lo, lo + k, read), _subtree_hash(lo + k, hi, read)]
    return [*_path(m, lo + k, hi, read), _subtree_hash(lo, lo + k, read)]


def _subproof(m: int, lo: int, hi: int, complete: bool, read: Reader) -> list[bytes]:
    """RFC 9162 §2.1.4.1 SUBPROOF(m, D[lo:hi], b)."""
    if m == hi - lo:
        return [] if complete else [_subtree_hash(lo, hi, read)]
    k, _ = _maxpow2(hi - lo)
    if m <= k:
        return [*_subproof(m, lo, lo + k, complete, read), _subtree_hash(lo + k, hi, read)]
    return [*_subproof(m - k, lo + k, hi, False, read), _subtree_hash(lo, lo + k, read)]


def inclusion_proof(index: int, size: int, read: Reader) -> list[bytes]:
    """The audit path of leaf ``index`` in the tree of ``size`` leaves (0 <= index < size)."""
    if not 0 <= index < size:
        raise ValueError("leaf index outside the tree")
    return _path(index, 0, size, read)


def consistency_proof(old: int, new: int, read: Reader) -> list[bytes]:
    """That the tree of ``old`` leaves is a prefix of the tree of ``new`` (1 <= old <= new)."""
    if not 1 <= old <= new:
        raise ValueError("tree sizes out of order")
    return [] if old == new else _subproof(old, 0, new, True, read)


def needed(compute: Callable[[Reader], object]) -> list[int]:
    """The stored-hash indexes ``compute`` reads (a dry run with placeholder hashes)."""
    asked: list[int] = []

    def record(indexes: Sequence[int]) -> list[bytes]:
        asked.extend(indexes)
        return [bytes(HASH_SIZE)] * len(indexes)

    compute(record)
    return asked


def reader_of(stored: dict[int, bytes]) -> Reader:
    return lambda indexes: [stored[i] for i in indexes]


def root_from_inclusion(index: int, size: int, data: bytes, proof: Sequence[bytes]) -> bytes:
    """The root an inclusion proof leads to (RFC 9162 §2.1.3.2): for tests and offline checks."""
    fn, sn = index, size - 1
    r = leaf_hash(data)
    for p in proof:
        if sn == 0:
            raise ValueError("proof too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ValueError("proof too short")
    return r


def verify_consistency(old: int, new: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> bool:
    """Whether ``proof`` shows the tree of ``old`` leaves with ``old_root`` to be a prefix of the
    tree of ``new`` leaves with ``new_root`` (RFC 9162 §2.1.4.2). Every tree extends the empty one."""
    if not 0 <= old <= new:
        return False
    if old == 0:
        return not proof
    if old == new:
        return not proof and old_root == new_root
    path = list(proof)
    if old & (old - 1) == 0:  # a power of two: the old root is itself a node of the new tree
        path.insert(0, old_root)
    if not path:
        return False
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root


def aligned_blocks(lo: int, hi: int) -> list[tuple[int, int]]:
    """[lo, hi) as the fewest aligned complete subtrees, left to right, as (level, n) — each is a
    node of any tree that contains it, stored at ``stored_hash_index(level, n)``."""
    out = []
    while lo < hi:
        level = 0
        while lo % (2 << level) == 0 and lo + (2 << level) <= hi:
            level += 1
        out.append((level, lo >> level))
        lo += 1 << level
    return out


def root_from_pieces(size: int, pieces: dict[tuple[int, int], bytes]) -> bytes:
    """MTH of a tree of ``size`` leaves from the hashes of some of its nodes, keyed by the leaf
    range [lo, hi) they cover (a leaf's is its leaf hash); raises KeyError when they do not
    cover the tree. Checks an exported range: its leaves plus the subtrees left and right of it."""

    def mth(lo: int, hi: int) -> bytes:
        h = pieces.get((lo, hi))
        if h is not None:
            return h
        if hi - lo <= 1:
            raise KeyError(f"no hash for leaves [{lo}, {hi})")
        k, _ = _maxpow2(hi - lo)
        return node_hash(mth(lo, lo + k), mth(lo + k, hi))

    return EMPTY_ROOT if size == 0 else mth(0, size)
