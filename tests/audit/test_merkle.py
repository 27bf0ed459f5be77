"""The Merkle tree's hashing against RFC 6962 reference vectors, and its storage layout against
Go's ``sumdb/tlog`` (pure functions; no database).

The vectors — leaf inputs, every complete subtree's hash, and the root of every tree size 0…8 —
are those of ``testonly/constants.go`` in github.com/transparency-dev/merkle (Apache-2.0), the
reference data Certificate Transparency's implementations share."""

from __future__ import annotations

import pytest

from services.audit import merkle

LEAVES = [bytes.fromhex(h) for h in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657")] + [
    bytes.fromhex("606162636465666768696a6b6c6d6e6f")
]
ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
NODES = [  # by level, then index within the level
    [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    ],
    [
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    ],
    [
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    ["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
]


def built() -> tuple[dict[int, bytes], list[bytes]]:
    """The stored hashes of the reference tree, and the root after each leaf."""
    frontier = merkle.Frontier()
    stored: dict[int, bytes] = {}
    roots = [frontier.root()]
    for leaf in LEAVES:
        first = merkle.stored_hash_index(0, frontier.size)
        stored |= {first + k: h for k, h in enumerate(frontier.append(leaf))}
        roots.append(frontier.root())
    return stored, roots


def test_roots_match_rfc_6962_for_every_size() -> None:
    _, roots = built()
    assert [r.hex() for r in roots] == ROOTS


def test_every_subtree_is_stored_where_tlog_stores_it() -> None:
    stored, _ = built()
    # tlog's order: leaf 0, leaf 1, their parent, leaf 2, leaf 3, their parent, the 4-leaf root…
    assert [merkle.stored_hash_index(level, n) for level, n in [(0, 0), (0, 1), (1, 0), (0, 2), (1, 1), (2, 0)]] == [
        0, 1, 2, 3, 5, 6,
    ]  # fmt: skip
    for level, hashes in enumerate(NODES):
        for n, h in enumerate(hashes):
            assert stored[merkle.stored_hash_index(level, n)].hex() == h, (level, n)
    assert len(stored) == merkle.stored_hash_count(len(LEAVES)) == 15


@pytest.mark.parametrize("size", range(1, len(LEAVES) + 1))
def test_roots_and_proofs_from_the_stored_hashes(size: int) -> None:
    stored, roots = built()
    read = merkle.reader_of(stored)
    assert merkle.tree_hash(size, read) == roots[size]
    assert merkle.Frontier(size, read(merkle.Frontier.indexes(size))).root() == roots[size]
    for index in range(size):
        proof = merkle.inclusion_proof(index, size, read)
        assert merkle.root_from_inclusion(index, size, LEAVES[index], proof) == roots[size]
    with pytest.raises(ValueError, match="outside"):
        merkle.inclusion_proof(size, size, read)
    with pytest.raises(ValueError, match="order"):
        merkle.consistency_proof(size + 1, size, read)
    assert merkle.consistency_proof(size, size, read) == []


def stored_tree(n: int) -> tuple[list[bytes], dict[int, bytes]]:
    """The roots of every size 0…n and the stored hashes of n leaves (distinct leaf data)."""
    frontier, stored, roots = merkle.Frontier(), {}, [merkle.EMPTY_ROOT]
    for i in range(n):
        first = merkle.stored_hash_index(0, i)
        stored |= {first + k: h for k, h in enumerate(frontier.append(i.to_bytes(4, "big")))}
        roots.append(frontier.root())
    return roots, stored


def test_consistency_proofs_verify_and_any_change_fails() -> None:
    """verify_consistency (what a witness runs) accepts every proof the log makes, for every pair
    of sizes up to 33, and refuses it with a changed hash, a missing hash or another root."""
    roots, stored = stored_tree(33)
    read = merkle.reader_of(stored)
    for new in range(1, 34):
        assert merkle.verify_consistency(0, new, roots[0], roots[new], [])  # every tree extends the empty one
        for old in range(1, new + 1):
            proof = merkle.consistency_proof(old, new, read)
            assert merkle.verify_consistency(old, new, roots[old], roots[new], proof), (old, new)
            assert not merkle.verify_consistency(old, new, roots[old], roots[new - 1], proof)
            if proof:
                assert not merkle.verify_consistency(old, new, roots[old], roots[new], proof[:-1])
                changed = [bytes([proof[0][0] ^ 1]) + proof[0][1:], *proof[1:]]
                assert not merkle.verify_consistency(old, new, roots[old], roots[new], changed)
            other = roots[old - 1] if old > 1 else bytes(32)
            assert not merkle.verify_consistency(old, new, other, roots[new], proof), (old, new)
    assert not merkle.verify_consistency(5, 4, roots[5], roots[4], [])


@pytest.mark.parametrize("size", [1, 2, 3, 7, 8, 13, 33])
def test_a_range_of_leaves_and_the_subtrees_beside_it_give_the_root(size: int) -> None:
    """An exported range [lo, hi) of a tree is checked against its root with the aligned subtrees
    left and right of it, read from the stored hashes (as the export writes them)."""
    roots, stored = stored_tree(size)
    for lo in range(size):
        for hi in range(lo + 1, size + 1):
            pieces = {(i, i + 1): merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(lo, hi)}
            for a, b in (0, lo), (hi, size):
                for level, n in merkle.aligned_blocks(a, b):
                    pieces[(n << level, (n + 1) << level)] = stored[merkle.stored_hash_index(level, n)]
            assert merkle.root_from_pieces(size, pieces) == roots[size], (lo, hi)
            del pieces[(lo, lo + 1)]
            with pytest.raises(KeyError):
                merkle.root_from_pieces(size, pieces)
