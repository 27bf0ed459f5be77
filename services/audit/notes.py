"""Signed checkpoints (签名检查点) in the C2SP formats that transparency logs share, so that any
tlog tool can check them: ``tlog-checkpoint`` (origin, tree size, base64 root hash) wrapped in a
``signed-note`` with an Ed25519 signature.

    <origin>\\n<tree size>\\n<base64 root>\\n\\n— <key name> <base64(key hash ‖ signature)>\\n

The key hash is the first 4 bytes of SHA-256(key name ‖ 0x0A ‖ 0x01 ‖ public key); 0x01 names
Ed25519. The verifier key, which an auditor keeps, is ``<name>+<hex key hash>+<base64(0x01 ‖ public key)>``.

Witnesses (见证方) add ``tlog-cosignature`` lines to the same note: an Ed25519 signature, by a key
of type 0x04, over ``cosignature/v1\ntime <t>\n`` followed by the checkpoint body, the line's
bytes being key hash ‖ big-endian u64 time ‖ signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ED25519 = b"\x01"
COSIGNATURE_V1 = b"\x04"  # C2SP signed-note: an Ed25519 timestamped cosignature (tlog-cosignature)
DASH = "\u2014"  # em dash: starts every signature line


class BadNote(ValueError):
    """A note or checkpoint that does not parse or whose signature does not verify."""


def public_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_hash(name: str, public: bytes, kind: bytes = ED25519) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + kind + public).digest()[:4]


def verifier_key(name: str, public: bytes, kind: bytes = ED25519) -> str:
    """The note verifier key of ``name`` (what ``note.NewVerifier`` reads); ``kind``
    COSIGNATURE_V1 for a witness's key."""
    return f"{name}+{key_hash(name, public, kind).hex()}+{base64.b64encode(kind + public).decode()}"


@dataclass(frozen=True)
class VerifierKey:
    name: str
    kind: bytes  # ED25519 (a log's key) or COSIGNATURE_V1 (a witness's)
    public: bytes

    @property
    def key_hash(self) -> bytes:
        return key_hash(self.name, self.public, self.kind)

    def __str__(self) -> str:
        return verifier_key(self.name, self.public, self.kind)


def parse_verifier_key(text: str, kind: bytes) -> VerifierKey:
    """Read ``<name>+<hex key hash>+<base64(type ‖ public key)>`` of the given type; raises
    BadNote when it is malformed, of another type, or its hash does not match."""
    parts = text.strip().split("+", 2)  # a name has no "+"; base64 may
    if len(parts) != 3 or not parts[0] or any(c.isspace() for c in parts[0]):
        raise BadNote("a verifier key is <name>+<hex key hash>+<base64 key>")
    name, hash_hex, rest = parts
    try:
        raw = base64.b64decode(rest, validate=True)
        wanted = bytes.fromhex(hash_hex)
    except (ValueError, binascii.Error) as err:
        raise BadNote("the verifier key's hash or key is not hex / base64") from err
    if raw[:1] != kind or len(raw) != 33:
        raise BadNote(f"not a verifier key of type 0x{kind.hex()} for an Ed25519 key")
    key = VerifierKey(name, kind, raw[1:])
    if key.key_hash != wanted:
        raise BadNote("the verifier key's hash does not match its name and key")
    return key


def private_key_text(name: str, key: Ed25519PrivateKey, kind: bytes) -> str:
    """The signed-note private key ``PRIVATE+KEY+<name>+<hex hash>+<base64(type ‖ seed)>``."""
    return (
        f"PRIVATE+KEY+{name}+{key_hash(name, public_bytes(key), kind).hex()}+"
        + base64.b64encode(kind + key.private_bytes_raw()).decode()
    )


def parse_private_key(text: str, kind: bytes) -> tuple[str, Ed25519PrivateKey]:
    """(name, key) of a private key written by :func:`private_key_text`; raises BadNote."""
    prefix = "PRIVATE+KEY+"
    if not text.startswith(prefix):
        raise BadNote("not a signed-note private key")
    parts = text.strip()[len(prefix) :].split("+", 2)
    if len(parts) != 3 or not parts[0]:
        raise BadNote("a private key is PRIVATE+KEY+<name>+<hex key hash>+<base64 key>")
    name, hash_hex, rest = parts
    try:
        raw = base64.b64decode(rest, validate=True)
    except (ValueError, binascii.Error) as err:
        raise BadNote("the private key is not base64") from err
    if raw[:1] != kind or len(raw) != 33:
        raise BadNote(f"not a private key of type 0x{kind.hex()}")
    key = Ed25519PrivateKey.from_private_bytes(raw[1:])
    if key_hash(name, public_bytes(key), kind).hex() != hash_hex:
        raise BadNote("the private key's hash does not match its name and key")
    return name, key


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


def split_note(note: str) -> tuple[str, list[str]]:
    """(body with its final newline, signature lines) of a signed note; raises BadNote."""
    body, sep, signatures = note.partition("\n\n")
    if not sep or not body:
        raise BadNote("not a signed note")
    return body + "\n", [line for line in signatures.splitlines() if line]


def cosignature_message(body: str, timestamp: int) -> bytes:
    """What a witness signs (C2SP tlog-cosignature, Ed25519): header, time, checkpoint body."""
    return f"cosignature/v1\ntime {timestamp}\n".encode() + body.encode()


def cosign(key: Ed25519PrivateKey, name: str, body: str, timestamp: int) -> str:
    """A witness's cosignature line over the checkpoint ``body`` at ``timestamp`` (POSIX seconds)."""
    signature = key.sign(cosignature_message(body, timestamp))
    raw = key_hash(name, public_bytes(key), COSIGNATURE_V1) + struct.pack(">Q", timestamp) + signature
    return f"{DASH} {name} {base64.b64encode(raw).decode()}"


def open_cosignature(line: str, body: str, witness: VerifierKey) -> int:
    """The time of ``witness``'s cosignature ``line`` over the checkpoint ``body``; raises
    BadNote when the line is not by that key or does not verify."""
    prefix = f"{DASH} {witness.name} "
    if not line.startswith(prefix):
        raise BadNote(f"not a signature line by {witness.name}")
    try:
        raw = base64.b64decode(line[len(prefix) :].strip(), validate=True)
    except (ValueError, binascii.Error) as err:
        raise BadNote("the signature is not base64") from err
    if len(raw) != 4 + 8 + 64 or raw[:4] != witness.key_hash:
        raise BadNote(f"not a cosignature/v1 by the key of {witness.name}")
    (timestamp,) = struct.unpack(">Q", raw[4:12])
    if timestamp >= 2**63:
        raise BadNote("cosignature time out of range")
    try:
        Ed25519PublicKey.from_public_bytes(witness.public).verify(raw[12:], cosignature_message(body, timestamp))
    except InvalidSignature as err:
        raise BadNote("cosignature does not verify") from err
    return int(timestamp)


def signer_of(line: str) -> tuple[str, bytes] | None:
    """(key name, key hash) a signature line claims, or None when it is not one."""
    if not line.startswith(f"{DASH} "):
        return None
    name, _, encoded = line[2:].strip().partition(" ")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (ValueError, binascii.Error):
        return None
    return (name, raw[:4]) if name and len(raw) >= 4 else None
