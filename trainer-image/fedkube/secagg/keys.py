"""The cryptography secure aggregation rests on, all from ``cryptography``:

- X25519 key agreement between two sites' key pairs;
- HKDF-SHA256 turning an agreed secret into a key bound to one job, round, attempt and use;
- AES-256-GCM encrypting a ShareBundle for its recipient (the aggregator routes it blind);
- AES-256-CTR as the pseudo-random generator that expands a 32-byte seed into a mask.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedkube.errors import SecureAggregationError
from fedkube.proto import fedkube_pb2 as pb
from fedkube.secagg.encoding import CHUNK_VALUES

KEY_BYTES = 32
NONCE_BYTES = 12
_BLOCK = 16  # AES block: four 32-bit mask values


@dataclass(frozen=True)
class Context:
    """What every derived key is bound to, so no key serves two rounds, tries or jobs."""

    job: str
    round: int
    attempt: int

    def ref(self, site: str) -> pb.RoundRef:
        """How a message of ``site`` in this round and try names it."""
        return pb.RoundRef(job=self.job, round=self.round, attempt=self.attempt, site=site)

    def label(self, use: str) -> bytes:
        return f"fedkube/secagg/v1/{use}/{self.job}/{self.round}/{self.attempt}".encode()


def new_private_key() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


def usable_public_key(raw: bytes) -> bool:
    """Whether ``raw`` is an X25519 public key that agrees a non-zero secret."""
    try:
        X25519PrivateKey.generate().exchange(X25519PublicKey.from_public_bytes(raw))
    except ValueError:
        return False
    return True


def public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def private_bytes(key: X25519PrivateKey) -> bytes:
    return key.private_bytes_raw()


def private_from_bytes(raw: bytes) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(raw)


def agree(own: X25519PrivateKey, peer_public: bytes, context: Context, use: str) -> bytes:
    """The 32-byte key both ends of a pair derive, for one use in one context."""
    try:
        peer = X25519PublicKey.from_public_bytes(peer_public)
        shared = own.exchange(peer)
    except ValueError as e:
        raise SecureAggregationError(f"not a usable X25519 public key: {e}") from None
    return HKDF(
        algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=context.label(use)
    ).derive(shared)


def seal(key: bytes, plaintext: bytes, associated: bytes) -> tuple[bytes, bytes]:
    """(nonce, ciphertext) of ``plaintext``; ``associated`` is authenticated, not sent."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce, AESGCM(key).encrypt(nonce, plaintext, associated)


def open_sealed(key: bytes, nonce: bytes, ciphertext: bytes, associated: bytes) -> bytes:
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, associated)
    except (InvalidTag, ValueError):
        raise SecureAggregationError(
            "a share does not decrypt: it was altered or is for another"
        ) from None


# AES-CTR encrypting zeros gives the key stream itself. Both buffers are reused rather than
# allocated per stream: fresh megabyte buffers cost more in page faults than the AES does.
_ZEROS = memoryview(bytes(CHUNK_VALUES * 4 + _BLOCK))


def _stream_into(seed: bytes, start: int, count: int, out: bytearray) -> np.ndarray:
    """Values ``start`` to ``start + count`` of the uint32 stream AES-256-CTR expands
    ``seed`` into, written into ``out`` (from ``_scratch``; ``count`` at most CHUNK_VALUES).
    Any range can be produced alone, so masks are made chunk by chunk."""
    first_block, skip = divmod(start, 4)
    size = -(-(skip + count) // 4) * _BLOCK
    counter = first_block.to_bytes(_BLOCK, "big")
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(counter)).encryptor()
    encryptor.update_into(_ZEROS[:size], out)
    return np.frombuffer(out, dtype="<u4", count=skip + count)[skip:]


def _scratch(count: int) -> bytearray:
    # The stream starts up to 3 values into its first block, and OpenSSL asks for a block
    # of room beyond what it writes.
    return bytearray(count * 4 + 3 * _BLOCK)


def apply_masks(values: np.ndarray, first: int, masks: Sequence[tuple[bytes, bool]]) -> None:
    """Add (True) or subtract (False) each seed's stream to uint32 ``values`` in place, mod
    2^32; ``values`` are the flat vector's elements from ``first`` on. Chunk by chunk, so a
    stream never takes more than a chunk of memory."""
    scratch = _scratch(min(values.size, CHUNK_VALUES))
    for at in range(0, values.size, CHUNK_VALUES):
        piece = values[at : at + CHUNK_VALUES]
        for seed, add in masks:
            stream = _stream_into(seed, first + at, piece.size, scratch)
            if add:
                piece += stream
            else:
                piece -= stream
