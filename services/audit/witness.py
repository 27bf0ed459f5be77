"""The witness (见证方) side: another platform — the province above a city, say — that cosigns
the audit log's checkpoints (C2SP tlog-cosignature), so that a log showing one history to some
auditors and another to others (a split view), or rewriting its history, is caught.

Each run fetches the log's latest checkpoint, checks the log's signature, checks that it extends
the last checkpoint this witness cosigned (an RFC 9162 consistency proof from the log, verified
here), cosigns it and posts the cosignature back. What was cosigned is kept in a small state
file; a checkpoint that does not extend it is refused, and nothing is signed or posted.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.audit import merkle, notes

STATE_VERSION = 1


class SplitView(Exception):
    """The log showed a history that does not extend the one this witness cosigned."""


class WitnessError(Exception):
    """The witness could not do its job (log unreachable, bad key, bad state…); nothing signed."""


@dataclass(frozen=True)
class WitnessState:
    """The largest consistent checkpoint of one log this witness cosigned."""

    log_key: str  # the log's verifier key: a state never moves to another log
    size: int
    root: str  # base64
    checkpoint: str  # the signed note as the log served it

    @staticmethod
    def load(path: Path) -> WitnessState | None:
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
            if data.pop("version") != STATE_VERSION:
                raise WitnessError(f"{path}: state of another version")
            return WitnessState(**data)
        except (ValueError, KeyError, TypeError) as err:
            raise WitnessError(f"{path}: not a witness state file ({err})") from err

    def save(self, path: Path) -> None:
        """Replace the file atomically: a crash leaves the old state or the new, never half."""
        text = json.dumps({"version": STATE_VERSION, **asdict(self)}, ensure_ascii=False, indent=2)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "w") as out:
            out.write(text + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)


@dataclass(frozen=True)
class Cosigned:
    size: int
    previous: int  # the size cosigned before (0 the first time)
    cosignature: str  # the note signature line posted


def keygen(name: str) -> tuple[str, str]:
    """(private key text, verifier key) of a new witness key named ``name``."""
    key = Ed25519PrivateKey.generate()
    return (
        notes.private_key_text(name, key, notes.COSIGNATURE_V1),
        notes.verifier_key(name, notes.public_bytes(key), notes.COSIGNATURE_V1),
    )


async def _get(client: httpx.AsyncClient, url: str, **params: int) -> httpx.Response:
    try:
        response = await client.get(url, params=params)
    except httpx.HTTPError as err:
        raise WitnessError(f"GET {url}: {err}") from err
    if response.status_code != 200:
        raise WitnessError(f"GET {url}: {response.status_code} {response.text[:500]}")
    return response


async def check_consistency(client: httpx.AsyncClient, old: WitnessState, new: notes.Checkpoint) -> None:
    """Raise SplitView unless the log's tree ``new`` extends the tree ``old`` this witness cosigned."""
    old_root = base64.b64decode(old.root)
    if new.size < old.size:
        raise SplitView(f"the log shows {new.size} records; it had {old.size} when this witness cosigned it")
    if new.size == old.size:
        if new.root != old_root:
            raise SplitView(f"two different trees of {new.size} records were signed by the log")
        return
    response = await _get(client, "/v1/audit/consistency", **{"from": old.size, "to": new.size})
    try:
        proof = [base64.b64decode(h, validate=True) for h in response.json()["hashes"]]
    except (ValueError, KeyError, TypeError) as err:
        raise WitnessError(f"the log's consistency proof does not parse: {err}") from err
    if not merkle.verify_consistency(old.size, new.size, old_root, new.root, proof):
        raise SplitView(
            f"the tree of {new.size} records does not extend the tree of {old.size} this witness cosigned: "
            "the log rewrote its history or shows another one to others"
        )


async def cosign_latest(
    client: httpx.AsyncClient, log_key: str, key_text: str, state_path: Path, now: datetime
) -> Cosigned:
    """One round of the witness: fetch, check, cosign, remember, post. ``client`` talks to the
    log (its base URL and, when needed, the bearer token that may read consistency proofs)."""
    try:
        log = notes.parse_verifier_key(log_key, notes.ED25519)
        name, key = notes.parse_private_key(key_text, notes.COSIGNATURE_V1)
    except notes.BadNote as err:
        raise WitnessError(str(err)) from err
    state = WitnessState.load(state_path)
    if state is not None and state.log_key != str(log):
        raise WitnessError(f"{state_path} holds the state of another log ({state.log_key})")
    note = (await _get(client, "/v1/audit/checkpoint")).text
    try:
        checkpoint = notes.open_checkpoint(note, log.name, log.public)
        body, _ = notes.split_note(note)
    except notes.BadNote as err:
        raise WitnessError(f"the log's checkpoint: {err}") from err
    if state is not None:
        await check_consistency(client, state, checkpoint)
    line = notes.cosign(key, name, body, int(now.timestamp()))
    # Remembered before it is posted: from now on this witness vouches for this tree.
    root = base64.b64encode(checkpoint.root).decode()
    WitnessState(str(log), checkpoint.size, root, note).save(state_path)
    try:
        response = await client.post(
            "/v1/audit/checkpoint/cosignatures", json={"tree_size": checkpoint.size, "cosignature": line}
        )
    except httpx.HTTPError as err:
        raise WitnessError(f"POST cosignature: {err}") from err
    if response.status_code != 200:
        raise WitnessError(f"the log refused the cosignature: {response.status_code} {response.text[:500]}")
    return Cosigned(checkpoint.size, state.size if state else 0, line)
