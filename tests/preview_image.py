"""The preview image for tests and benchmarks, built locally: no registry is reachable here."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
TAG = "kosuke-preview-test:latest"
SERVE_HTTP = ["/bin/busybox", "httpd", "-f", "-p", "3000", "-h", "/www"]
# A dev server that ignores SIGTERM: stopping it takes the whole stop timeout.
IGNORE_SIGTERM = ["/bin/busybox", "sh", "-c", "trap '' TERM; while :; do busybox sleep 1; done"]


def preview_image_build(
    docker_client,
    *,
    tag: str = TAG,
    command: list[str] = SERVE_HTTP,
    volumes: list[str] = (),
) -> str:
    """`docker import` a root filesystem holding a static busybox that runs `command`
    (by default: serve HTTP on port 3000); each container gets an anonymous volume at each
    of `volumes`.

    Raises FileNotFoundError when no static busybox is installed (Debian: busybox-static).
    """
    # A dynamic binary names its loader (ld-linux) in its first page; a static one does not.
    if not BUSYBOX.exists() or b"ld-linux" in BUSYBOX.read_bytes()[:4096]:
        raise FileNotFoundError(f"a static {BUSYBOX} is needed (Debian package busybox-static)")
    rootfs = io.BytesIO()
    with tarfile.open(fileobj=rootfs, mode="w") as tar:
        tar.add(BUSYBOX, arcname="bin/busybox")
        page = b"preview\n"
        info = tarfile.TarInfo("www/index.html")
        info.size = len(page)
        tar.addfile(info, io.BytesIO(page))
    repository, version = tag.split(":")
    docker_client.api.import_image_from_data(
        rootfs.getvalue(),
        repository=repository,
        tag=version,
        changes=[f"CMD {json.dumps(command)}", *(f"VOLUME {path}" for path in volumes)],
    )
    return tag
