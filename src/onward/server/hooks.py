"""Completion hooks: calling one for a finished upload, and ``onward serve --on-complete CMD``."""

from __future__ import annotations

import base64
import json
import logging
import os
import shlex
import subprocess
from collections.abc import Callable

from ..errors import OnwardError
from .options import FinishedUpload
from .storage import Upload, UploadStore

__all__ = ["command_hook", "finish_hook"]

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


def finish_hook(
    store: UploadStore, on_complete: Callable[[FinishedUpload], object] | None, upload: Upload
) -> None:
    """Call ``on_complete`` for the promoted ``upload`` (blocking; a failure is logged), then
    record HOOKED so that a restart does not call it again."""
    if on_complete is not None:
        path = store.final_path(upload.id)
        finished = FinishedUpload(
            upload.id, path, path + ".json", upload.offset, _decoded(upload.metadata), upload.content_type
        )
        try:
            on_complete(finished)
        except Exception:
            log.exception("completion hook failed for upload %s", upload.id)
    try:
        store.record_hooked(upload)
    except OnwardError as exc:  # e.g. deleted while a hook past its timeout still ran
        log.error("%s", exc.message)


def _decoded(metadata: dict[str, str | None]) -> dict[str, str | None]:
    return {
        k: None if v is None else base64.b64decode(v).decode("utf-8", "replace") for k, v in metadata.items()
    }
