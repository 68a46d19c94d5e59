"""multipart/form-data bodies built by hand, so that tests, the upload fuzz target and the soak
test can send exactly what a client might: any field names, file names (quotes, separators,
line breaks ...), content types and bytes."""

from __future__ import annotations

BOUNDARY = "cleancutBoundary7MA4YWxk"


def form_data(parts: list[tuple[str, str | bytes | None, bytes]], boundary: str = BOUNDARY) -> bytes:
    """The body for ``parts``: ``(field name, file name or None for a text field, data)``. A
    file name given as bytes is sent as it is (hostile names); as str it is UTF-8 encoded."""
    out = b""
    for name, filename, data in parts:
        head = f'Content-Disposition: form-data; name="{name}"'.encode()
        if filename is not None:
            raw = filename if isinstance(filename, bytes) else filename.encode()
            head += b'; filename="' + raw + b'"\r\nContent-Type: application/octet-stream'
        out += f"--{boundary}\r\n".encode() + head + b"\r\n\r\n" + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def content_type(boundary: str = BOUNDARY) -> str:
    return f"multipart/form-data; boundary={boundary}"
