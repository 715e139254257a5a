"""What more than one benchmark needs."""

from __future__ import annotations

import subprocess
import sys


def precompile(package: str | None = None) -> str:
    """Compile onward's modules (``package``; default: the onward that children of this
    benchmark import, PYTHONPATH included) to bytecode beside them (``__pycache__``), where
    Python looks first whatever ``PYTHONDONTWRITEBYTECODE`` says. An installed onward has its
    bytecode; without it every run would compile every module again, a share of a copy's
    start-up (docs/PERFORMANCE.md)."""
    if package is None:
        found = subprocess.run(
            [sys.executable, "-c", "import os, onward; print(os.path.dirname(onward.__file__))"],
            check=True,
            capture_output=True,
            text=True,
        )
        package = found.stdout.strip()
    subprocess.run([sys.executable, "-m", "compileall", "-q", package], check=True, stdout=subprocess.DEVNULL)
    return f"onward:  {package}, bytecode compiled beside it"
