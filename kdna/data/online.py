"""Downloads happen only when asked for, and fail at once (with the offline way) when offline.

Anything kdna fetches (torchvision weights, data sets) goes through :func:`require_online`
first: if the file is not already cached and its host cannot be reached within a few
seconds, the caller gets a ``ConnectionError`` that names the offline alternative instead
of a long hang or a bare socket error.
"""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["require_online"]


def require_online(url: str, *, what: str, offline: str, cached: Path | None = None,
                   timeout: float = 3.0) -> None:
    """Return if ``cached`` exists or ``url``'s host answers; raise ``ConnectionError`` if not.

    Args:
        url: what would be downloaded.
        what: how to name it in the error ("torchvision weights resnet18/DEFAULT").
        offline: the alternative that works without a network, for the error message.
        cached: where the download would be cached; if it exists, no network is needed.
        timeout: seconds to wait for the host.
    """
    if cached is not None and cached.exists():
        return
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError as exc:
        where = f" (not cached at {cached})" if cached is not None else ""
        raise ConnectionError(
            f"{what} must be downloaded from {parts.hostname}{where}, which cannot be "
            f"reached ({exc}). Offline, use {offline}."
        ) from exc
