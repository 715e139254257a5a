"""What a resume may keep of an interrupted copy, worked out from the files it left.

A resume keeps every chunk its journal claims and, besides those, every chunk the partial
holds in full and intact that the journal does not claim yet: a run killed between writing
chunks and the checkpoint that would have claimed them (engine ``Transfer.adopt``). This is
computed here from the bytes on disk, independently of onward's own plan code.
"""

from __future__ import annotations

from pathlib import Path

from onward.core.journal import decode


def intact_unclaimed(data: bytes, journal: Path, partial: Path) -> int:
    """Bytes of the chunks of ``data`` that ``partial`` holds in full and unchanged and that
    ``journal`` does not claim (0 without a readable journal and a partial)."""
    if not journal.exists() or not partial.exists():
        return 0
    loaded = decode(journal.read_bytes())
    chunk, held = loaded.header.chunk_size, partial.read_bytes()
    kept = 0
    for start in range(0, len(data), chunk):
        end = min(start + chunk, len(data))
        if start // chunk not in loaded.chunks and end <= len(held) and held[start:end] == data[start:end]:
            kept += end - start
    return kept
