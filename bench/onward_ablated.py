#!/usr/bin/env python3
"""The onward CLI with one optimisation switched off, to measure what it buys (copy_bench.py --ablate).

Usage::

    python bench/onward_ablated.py --off=source-direct copy SRC DST  # source read through the cache
    python bench/onward_ablated.py --off=sink-direct copy SRC DST    # partial written through the cache
    python bench/onward_ablated.py --off=readahead copy SRC DST   # one buffer: read+hash, then write

It patches module attributes of the onward it imports (whatever ``PYTHONPATH``
or the venv provides) and then runs its CLI unchanged. The names it patches are
private; if the engine no longer has them it says so and exits 3, rather than
silently measuring the unpatched engine.
"""

from __future__ import annotations

import importlib
import sys

# name -> (module, attribute (dotted: of a class in it), replacement)
PATCHES: dict[str, tuple[str, str, object]] = {
    # Readahead depth 1: the reader thread cannot read (and hash) the next chunk while
    # the engine writes this one, so reading, hashing and writing take turns.
    "readahead": ("onward.endpoints.local", "LocalSource.readahead", 1),
    # Read the source through the page cache instead of with O_DIRECT.
    "source-direct": ("onward.endpoints.local", "SOURCE_DIRECT", False),
    # Write and read back the partial through the page cache (read-back after dropping it).
    "sink-direct": ("onward.endpoints.local", "SINK_DIRECT", False),
}


def main(argv: list[str]) -> int:
    off = []
    while argv and argv[0].startswith("--off="):
        off.extend(argv.pop(0).removeprefix("--off=").split(","))
    for name in off:
        if name not in PATCHES:
            print(f"onward_ablated: unknown --off={name}; known: {', '.join(PATCHES)}", file=sys.stderr)
            return 2
        module_name, attribute, value = PATCHES[name]
        owner: object = importlib.import_module(module_name)
        *path, leaf = attribute.split(".")
        for part in path:
            owner = getattr(owner, part, None)
        if owner is None or not hasattr(owner, leaf):
            print(f"onward_ablated: {module_name}.{attribute} no longer exists", file=sys.stderr)
            return 3
        setattr(owner, leaf, value)
    from onward.cli.main import main as cli

    sys.argv[0] = "onward"
    return cli(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
