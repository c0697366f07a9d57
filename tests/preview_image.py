"""The preview image for tests and benchmarks, built locally: no registry is reachable here."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
TAG = "kosuke-preview-test:latest"


def preview_image_build(docker_client) -> str:
    """`docker import` a root filesystem holding a static busybox that serves HTTP on 3000.

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
    repository, tag = TAG.split(":")
    docker_client.api.import_image_from_data(
        rootfs.getvalue(),
        repository=repository,
        tag=tag,
        changes=['CMD ["/bin/busybox", "httpd", "-f", "-p", "3000", "-h", "/www"]'],
    )
    return TAG
