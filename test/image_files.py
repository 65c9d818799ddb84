"""Image files that OpenCV refuses in particular ways, built byte by byte."""

import struct
import zlib


def oversized_png(width: int = 40000, height: int = 30000) -> bytes:
    """A PNG whose header declares width x height 8-bit grey pixels (over OpenCV's limit of
    2^30 by default). One zero row of data is enough: OpenCV refuses it at the header."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload))
            + kind
            + payload
            + struct.pack(">I", zlib.crc32(kind + payload))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(width + 1)))
        + chunk(b"IEND", b"")
    )
