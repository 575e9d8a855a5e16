"""Helpers for the tests of the Gradio app (app.py): load it by path, serve it on the loopback, write hostile files."""

import contextlib
import importlib.util
import socket
import struct
import zlib
from pathlib import Path


REPO_ROOT = Path(__file__).resolve().parents[1]


def load_app_module():
    # Loaded by path: `app` is the Space's file at the repository root, not an installed module.
    spec = importlib.util.spec_from_file_location("fuscore_space_app", REPO_ROOT / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def served(app_module, app, **launch_kwargs):
    """Serves a built app on 127.0.0.1 for the block (with app.py's `launch`); yields its URL."""
    port = free_port()
    app_module.launch(app, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                      **launch_kwargs)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        app.close()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_palette_png(path: Path, width: int, height: int) -> Path:
    """A valid 1-bit palette PNG of `width` x `height` black pixels, streamed row by row (never held in memory).

    A few hundred KB on disk however many pixels it has: the shape of a decompression bomb. Pillow reads it as a
    "P" image of width x height bytes.
    """
    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    parts = [compressor.compress(row) for _ in range(height)] + [compressor.flush()]
    header = struct.pack(">IIBBBBB", width, height, 1, 3, 0, 0, 0)  # bit depth 1, colour type 3 (palette)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"PLTE", b"\x00\x00\x00\xff\xff\xff")
                     + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b""))
    return path
