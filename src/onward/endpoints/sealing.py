"""What a local partial's seal records besides its ``fstat`` (``core.trust``): this boot's id and
the mount the partial is on, so that a seal made before a reboot or on another mount never
vouches for the partial now."""

from __future__ import annotations

from ..core.trust import UNKNOWN_BOOT

__all__ = ["BOOT_ID", "mount_id"]


def _boot_id() -> bytes:
    """This boot's id (Linux: a random UUID drawn at every boot), or all zeros when unknown."""
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as fh:
            boot = bytes.fromhex(fh.read().decode("ascii").strip().replace("-", ""))
    except (OSError, ValueError, UnicodeDecodeError):
        return UNKNOWN_BOOT
    return boot if len(boot) == 16 else UNKNOWN_BOOT


BOOT_ID = _boot_id()


def mount_id(fd: int) -> int:
    """The kernel's id of the mount ``fd`` is on (``/proc/self/fdinfo``), or 0 when unknown."""
    try:
        with open(f"/proc/self/fdinfo/{fd}", "rb") as fh:
            for line in fh:
                if line.startswith(b"mnt_id:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0
