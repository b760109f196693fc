"""SHA-256 digests of input files: what ``config.yaml`` pins a teacher checkpoint and NAYER's label
embeddings by (METHODS.md §11.3), so that ``--resume`` compares contents, not paths."""
from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (the teacher and NAYER's embeddings are recorded by it in config.yaml)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
