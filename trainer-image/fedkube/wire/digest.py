"""The digest of a model as a site received it: what a site's guards remember it scored, and
what the consistency stage binds, so that every site that signs a round's survivors also
says which model it trained or scored."""

from __future__ import annotations

import hashlib

from fedkube.wire.tensors import Params


def model_digest(params: Params) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(params):
        value = params[name]
        h.update(f"{name}|{value.dtype.str}|{value.shape}|".encode())
        h.update(value.tobytes())
    return h.hexdigest()
