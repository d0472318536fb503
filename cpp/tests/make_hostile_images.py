"""Hostile images for the C++ programs' resource-limit tests, made on the fly (ctest fixture).

    python make_hostile_images.py OUT_DIR

Writes OUT_DIR/bomb.png (a 20000x20000 all-zero grayscale PNG: ~400 KB on disk, 400 million
pixels decoded), OUT_DIR/huge_header.png (a valid PNG header claiming 100000x100000, no data)
and OUT_DIR/huge_header.jpg (a JPEG start claiming 60000x60000).
"""

from __future__ import annotations

import struct
import sys
import zlib
from pathlib import Path


def chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int) -> bytes:
    """Signature and IHDR of an 8-bit grayscale PNG."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)


def bomb(width: int, height: int) -> bytes:
    """A complete, valid all-zero grayscale PNG, compressed row by row (little memory)."""
    z = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte 0 + zeros
    data = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    return png_header(width, height) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def jpeg_header(width: int, height: int) -> bytes:
    """SOI, an APP0 segment, then a baseline SOF0 frame header claiming width x height."""
    app0 = b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = struct.pack(">BHHB", 8, height, width, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    seg = lambda m, d: b"\xff" + bytes([m]) + struct.pack(">H", len(d) + 2) + d  # noqa: E731
    return b"\xff\xd8" + seg(0xE0, app0) + seg(0xC0, sof)


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    (out / "bomb.png").write_bytes(bomb(20000, 20000))
    (out / "huge_header.png").write_bytes(png_header(100000, 100000))
    (out / "huge_header.jpg").write_bytes(jpeg_header(60000, 60000))


if __name__ == "__main__":
    main()
