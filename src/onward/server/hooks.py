"""Completion hooks that are not Python: ``onward serve --on-complete CMD``."""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
from collections.abc import Callable

from .options import FinishedUpload

__all__ = ["command_hook"]

log = logging.getLogger("onward.server")


def command_hook(command: str, timeout: float = 600.0) -> Callable[[FinishedUpload], None]:
    """Run ``command`` with the finished file's path as its last argument, and the upload in
    ``ONWARD_UPLOAD_ID``, ``ONWARD_UPLOAD_PATH``, ``ONWARD_UPLOAD_SIZE`` and
    ``ONWARD_UPLOAD_METADATA`` (JSON). No shell: the command is split as a shell would."""
    argv = shlex.split(command)
    if not argv:
        raise ValueError("the completion command is empty")

    def run(upload: FinishedUpload) -> None:
        env = {
            **os.environ,
            "ONWARD_UPLOAD_ID": upload.id,
            "ONWARD_UPLOAD_PATH": upload.path,
            "ONWARD_UPLOAD_SIZE": str(upload.size),
            "ONWARD_UPLOAD_METADATA": json.dumps(upload.metadata, sort_keys=True),
        }
        try:
            done = subprocess.run([*argv, upload.path], env=env, stdin=subprocess.DEVNULL, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.error("completion command for upload %s failed: %s", upload.id, exc)
            return
        if done.returncode != 0:
            log.error("completion command for upload %s exited with %d", upload.id, done.returncode)

    return run
