"""Signed checkpoints (签名检查点) in the C2SP formats that transparency logs share, so that any
tlog tool can check them: ``tlog-checkpoint`` (origin, tree size, base64 root hash) wrapped in a
``signed-note`` with an Ed25519 signature.

    <origin>\\n<tree size>\\n<base64 root>\\n\\n— <key name> <base64(key hash ‖ signature)>\\n

The key hash is the first 4 bytes of SHA-256(key name ‖ 0x0A ‖ 0x01 ‖ public key); 0x01 names
Ed25519. The verifier key, which an auditor keeps, is ``<name>+<hex key hash>+<base64(0x01 ‖ public key)>``.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ED25519 = b"\x01"
DASH = "\u2014"  # em dash: starts every signature line


class BadNote(ValueError):
    """A note or checkpoint that does not parse or whose signature does not verify."""


def public_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_hash(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ED25519 + public).digest()[:4]


def verifier_key(name: str, public: bytes) -> str:
    """The note verifier key of ``name`` (what ``note.NewVerifier`` reads)."""
    return f"{name}+{key_hash(name, public).hex()}+{base64.b64encode(ED25519 + public).decode()}"


def checkpoint_body(origin: str, size: int, root: bytes) -> str:
    return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n"


def sign_checkpoint(key: Ed25519PrivateKey, name: str, origin: str, size: int, root: bytes) -> str:
    """The checkpoint of a tree of ``size`` leaves with ``root``, as a signed note."""
    body = checkpoint_body(origin, size, root)
    signature = key.sign(body.encode())
    line = base64.b64encode(key_hash(name, public_bytes(key)) + signature).decode()
    return f"{body}\n{DASH} {name} {line}\n"


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes


def open_checkpoint(note: str, name: str, public: bytes) -> Checkpoint:
    """Check the note's signature by ``name``'s key and parse the checkpoint it carries."""
    body, sep, signatures = note.partition("\n\n")
    if not sep or not body:
        raise BadNote("not a signed note")
    body += "\n"
    wanted = key_hash(name, public)
    verified = False
    for line in signatures.splitlines():
        prefix = f"{DASH} {name} "
        if not line.startswith(prefix):
            continue
        try:
            raw = base64.b64decode(line[len(prefix) :], validate=True)
        except ValueError:
            continue
        if raw[:4] != wanted:
            continue
        try:
            Ed25519PublicKey.from_public_bytes(public).verify(raw[4:], body.encode())
        except InvalidSignature as err:
            raise BadNote("signature does not verify") from err
        verified = True
    if not verified:
        raise BadNote(f"no signature by {name}")
    lines = body.splitlines()
    if len(lines) < 3 or not lines[1].isascii() or not lines[1].isdigit():
        raise BadNote("not a checkpoint")
    try:
        root = base64.b64decode(lines[2], validate=True)
    except ValueError as err:
        raise BadNote("root hash is not base64") from err
    return Checkpoint(lines[0], int(lines[1]), root)
