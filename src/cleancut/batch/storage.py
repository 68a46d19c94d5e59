"""Where ``cleancut batch`` reads and writes: local paths, and URIs through pyarrow file systems.

A location is a string: a local path, or a URI such as ``s3://bucket/photos/a.jpg`` (any scheme
``pyarrow.fs.FileSystem.from_uri`` knows: ``s3``, ``gs``, ``hdfs``, ...; ``file://`` is a local
path). Local paths must be visible to every node that works on them (a shared file system); URIs
need the cluster's nodes to hold credentials: pyarrow reads the usual ones (``AWS_ACCESS_KEY_ID``,
``~/.aws``, instance roles, ...). For S3-compatible stores (MinIO, Ceph, moto) the endpoint is
taken from ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``, as the AWS tools do.

:class:`RemoteTree` implements :class:`cleancut.jobs.Tree` for URIs, so folders, patterns and
output naming follow exactly the rules of ``cleancut remove``.
"""

from __future__ import annotations

import functools
import io
import os
import posixpath
import re
from pathlib import Path, PurePath, PurePosixPath
from typing import Any

from ..errors import ConfigError
from ..jobs import LOCAL, Tree, fixed_parts, glob_match, is_image_name

_URI = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]+)://(?P<netloc>[^/]*)(?P<path>.*)")
_GLOB_CHARS = re.compile(r"[*?\[]")


def is_uri(text: str) -> bool:
    """Whether ``text`` is a URI for a pyarrow file system (``file://`` counts as local)."""
    match = _URI.fullmatch(str(text))
    return bool(match) and match["scheme"].lower() != "file"


def local_path(text: str) -> str:
    """``file:///x`` -> ``/x``; other text unchanged."""
    return text[len("file://"):] if text.lower().startswith("file://") else text


def tree_for(item: str) -> Tree:
    """The tree an input or output lives in."""
    if not is_uri(item):
        return LOCAL
    match = _URI.fullmatch(item)
    if not match["netloc"]:
        raise ConfigError(f"{item}: expected a URI with a bucket or host, e.g. s3://bucket/photos/.")
    if _GLOB_CHARS.search(match["netloc"]):
        raise ConfigError(f"{item}: wildcards in the bucket or host name are not supported.")
    return _remote_tree(match["scheme"].lower(), match["netloc"])


@functools.lru_cache(maxsize=64)
def _remote_tree(scheme: str, netloc: str) -> "RemoteTree":
    return RemoteTree(scheme, netloc)


def _filesystem(scheme: str, netloc: str) -> tuple[Any, str]:
    """A pyarrow file system for ``scheme://netloc`` and the path of that root inside it."""
    from pyarrow import fs as pafs

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    try:
        if scheme == "s3" and endpoint:
            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
            return pafs.S3FileSystem(endpoint_override=endpoint, region=region), netloc
        filesystem, root = pafs.FileSystem.from_uri(f"{scheme}://{netloc}")
    except (OSError, ValueError) as exc:  # ArrowInvalid is a ValueError, ArrowIOError an OSError
        raise ConfigError(f"cannot open {scheme}://{netloc}: {exc}") from None
    return filesystem, root


class RemoteTree:
    """One bucket (or host) of a pyarrow file system; locations are URI strings."""

    def __init__(self, scheme: str, netloc: str):
        self.prefix = f"{scheme}://{netloc}"
        self.fs, root = _filesystem(scheme, netloc)
        self.root = root.rstrip("/")

    def path(self, uri: str) -> str:
        """The file system's path of a URI of this tree."""
        return self.root + uri[len(self.prefix):]

    def uri(self, path: str) -> str:
        return self.prefix + path[len(self.root):]

    def kind(self, item: str) -> str | None:
        from pyarrow import fs as pafs

        kind = self.fs.get_file_info(self.path(self.locate(item))).type
        return {pafs.FileType.Directory: "dir", pafs.FileType.File: "file"}.get(kind)

    def locate(self, item: str) -> str:
        path = _URI.fullmatch(item)["path"]
        path = posixpath.normpath(path) if path.strip("/") else ""  # a//b, a/./b, a/../b -> a/b
        return self.prefix + path

    def files(self, folder: str) -> list[tuple[str, int]]:
        """Every file below ``folder`` (recursive) with its size, sorted by location."""
        from pyarrow import fs as pafs

        selector = pafs.FileSelector(self.path(folder), recursive=True, allow_not_found=True)
        infos = self.fs.get_file_info(selector)
        return sorted((self.uri(i.path), i.size) for i in infos if i.type == pafs.FileType.File)

    def _images_below(self, folder: str, pattern: tuple[str, ...] | None, exclude: Any,
                      skip_cutouts: bool) -> list[str]:
        found = []
        for uri, _size in self.files(folder):
            parts = tuple(uri[len(folder) + 1:].split("/"))
            if any(p.startswith(".") for p in parts) or not is_image_name(parts[-1], skip_cutouts):
                continue
            if pattern is not None and not glob_match(parts, pattern):
                continue
            if isinstance(exclude, str) and self.relative(uri, exclude) is not None:
                continue
            found.append(uri)
        return found

    def scan(self, folder: str, exclude: Any, skip_cutouts: bool) -> list[str]:
        return self._images_below(folder, None, exclude, skip_cutouts)

    def glob(self, pattern: str, exclude: Any, skip_cutouts: bool) -> tuple[list[str], str]:
        parts = self.locate(pattern)[len(self.prefix) + 1:].split("/")
        fixed = fixed_parts(parts)
        base = "/".join([self.prefix, *fixed])
        return self._images_below(base, tuple(parts[len(fixed):]), exclude, skip_cutouts), base

    def relative(self, location: str, folder: Any) -> PurePath | None:
        folder = str(folder).rstrip("/") + "/"
        return PurePosixPath(location[len(folder):]) if location.startswith(folder) else None

    def name(self, location: str) -> str:
        return location.rsplit("/", 1)[-1]

    def join(self, folder: str, relative: PurePath) -> str:
        return f"{str(folder).rstrip('/')}/{relative.as_posix()}"

    def beside(self, location: str, name: str) -> str:
        return f"{location.rsplit('/', 1)[0]}/{name}"

    def key(self, location: Any) -> str:
        return str(location)

    def same_file(self, a: str, b: str) -> bool:
        return a == b


# ---------------------------------------------------------------- reading and writing


def location_text(location: Any) -> str:
    """A location as the string workers and the manifest use: local paths made absolute (workers
    run in other folders, on other machines), URIs as they are."""
    return location if isinstance(location, str) and is_uri(location) else os.path.abspath(location)


def read_bytes(location: str) -> bytes:
    """The whole file (one request for a URI). Raises OSError (FileNotFoundError when missing)."""
    if not is_uri(location):
        return Path(location).read_bytes()
    tree = tree_for(location)
    with tree.fs.open_input_stream(tree.path(location)) as stream:
        return stream.readall()


def open_source(location: str) -> Any:
    """What :meth:`cleancut.Remover.remove` reads: the path of a local file, or the bytes of a
    remote one in a file object named after its URI (so errors name the URI)."""
    if not is_uri(location):
        return location
    data = io.BytesIO(read_bytes(location))
    data.name = location
    return data


def write_atomic(location: str, data: bytes) -> None:
    """Write a whole file so that readers (and a resumed run) see it complete or not at all.

    Local: through a temporary file in the same folder and ``os.replace``
    (:func:`cleancut.io.write_atomic`). URIs: the data is complete in memory before the upload
    starts, and object stores (S3, GCS) make an object visible only once its upload has
    finished: one PutObject, or the CompleteMultipartUpload of a large one. A writer killed
    mid-upload leaves no object at that key (on S3 at most an incomplete multipart upload, which
    a bucket's AbortIncompleteMultipartUpload lifecycle rule removes). So no temporary key and
    server-side copy are needed, which would double the requests per image.
    """
    if not is_uri(location):
        from ..io import write_atomic as write_local

        Path(location).parent.mkdir(parents=True, exist_ok=True)
        write_local(location, data)
        return
    tree = tree_for(location)
    stream = tree.fs.open_output_stream(tree.path(location))
    stream.write(data)
    stream.close()


def delete(location: str) -> None:
    if not is_uri(location):
        Path(location).unlink(missing_ok=True)
        return
    tree = tree_for(location)
    tree.fs.delete_file(tree.path(location))


def remove_empty_folders(folder: str, up_to: str) -> None:
    """Remove ``folder`` and its parents below ``up_to`` while they are empty (local only)."""
    if is_uri(folder):
        return
    folder, up_to = os.path.abspath(folder), os.path.abspath(up_to)
    while folder != up_to and folder.startswith(up_to + os.sep) and os.path.isdir(folder) \
            and not os.listdir(folder):
        os.rmdir(folder)
        folder = os.path.dirname(folder)


def size(location: str) -> int | None:
    """The size of a file, or None when there is no file there."""
    if not is_uri(location):
        return os.path.getsize(location) if os.path.isfile(location) else None
    from pyarrow import fs as pafs

    tree = tree_for(location)
    info = tree.fs.get_file_info(tree.path(location))
    return info.size if info.type == pafs.FileType.File else None


def files_below(folder: str) -> list[tuple[str, int]]:
    """Every file below ``folder`` (recursive; none if it does not exist) with its size, as
    (location text, bytes); local paths absolute."""
    if is_uri(folder):
        return tree_for(folder).files(folder)
    found = []
    for root, _dirs, names in os.walk(os.path.abspath(folder)):
        for name in names:
            path = os.path.join(root, name)
            try:
                found.append((path, os.stat(path).st_size))
            except FileNotFoundError:  # removed while we walked (e.g. a finished temporary file)
                continue
    return sorted(found)
