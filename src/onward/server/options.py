"""What a user of the upload server configures and receives: its options and the hooks' arguments."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

__all__ = ["DEFAULT_MAX_SIZE", "AuthRequest", "FinishedUpload", "ServerOptions"]

DEFAULT_MAX_SIZE = 100 << 30  # a safe bound on one upload and on a concatenation's result


@dataclass(frozen=True)
class FinishedUpload:
    """What the completion hook gets: the promoted file, its metadata file and what the client said."""

    id: str
    path: str
    metadata_path: str
    size: int
    metadata: dict[str, str | None]  # tus Upload-Metadata, values decoded (UTF-8, errors replaced)
    content_type: str | None


@dataclass(frozen=True)
class AuthRequest:
    """What the auth hook sees of a request: return True to let it through (else 401)."""

    method: str
    path: str
    headers: Mapping[str, str]  # lower-case names
    client: tuple[str, int] | None


@dataclass
class ServerOptions:
    base_path: str = "/files/"
    max_size: int | None = DEFAULT_MAX_SIZE  # bytes; larger uploads are refused with 413; None: no limit
    expire_after: float = 24 * 3600.0  # an unfinished upload older than this is removed
    idle_timeout: float = 60.0  # seconds without a byte of request body before the request is ended
    lock_wait: float = 5.0  # seconds a request waits for the previous one on the same upload to end
    checkpoint_bytes: int = 64 << 20  # data made durable and acknowledged at least this often ...
    checkpoint_seconds: float = 1.0  # ... and this often, inside one long PATCH
    sweep_interval: float = 60.0  # how often expired uploads are looked for
    cors_origins: tuple[str, ...] = ()  # "*" for any
    token: str | None = None  # require "Authorization: Bearer TOKEN"
    auth: Callable[[AuthRequest], bool | Awaitable[bool]] | None = None
    on_complete: Callable[[FinishedUpload], object] | None = None
    hook_timeout: float = 60.0  # seconds a response waits for the hook (a command is then killed)
    hook_workers: int = 4  # hooks running at once; more wait their turn, upload bytes never do
    io_threads: int = 8  # threads writing and syncing upload data, sized for one disk
    clock: Callable[[], float] = field(default=time.time, repr=False)
