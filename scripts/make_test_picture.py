"""Draws the test picture of the `image` example: conv2d/examples/assets/scene.png.

A 192x128 RGB scene with the features convolutions show well: hard vertical, horizontal
and diagonal edges (house, roof), a smooth gradient (sky), a disc (sun), fine stripes
(fence) and a checkerboard (tiles). Standard library only; the bytes are deterministic.

    python3 scripts/make_test_picture.py
"""

import pathlib
import struct
import zlib

W, H = 192, 128


def pixel(x: int, y: int) -> tuple[int, int, int]:
    # Ground below y = 92, sky above: a vertical blue gradient.
    if y >= 92:
        # Checkerboard tiles of 8 px on the ground.
        light = ((x // 8) + (y // 8)) % 2 == 0
        return (120, 170, 90) if light else (70, 120, 50)
    sky = (110 + y, 160 + y // 2, 235)
    # Sun: a disc of radius 14 centred at (156, 26).
    if (x - 156) ** 2 + (y - 26) ** 2 <= 14**2:
        return (250, 210, 60)
    # House body 40..100 x 52..92, with a door and a window.
    if 40 <= x < 100 and 52 <= y < 92:
        if 62 <= x < 76 and 68 <= y < 92:
            return (90, 50, 30)
        if 80 <= x < 94 and 60 <= y < 72:
            return (200, 230, 250)
        return (200, 80, 60)
    # Roof: a triangle with apex (70, 24) over the house.
    if 24 <= y < 52 and abs(x - 70) <= (y - 24) * 36 // 28:
        return (110, 40, 40)
    # Fence: 2-px pickets every 5 px between y = 76 and 92, right of the house.
    if 110 <= x < 186 and 76 <= y < 92 and x % 5 < 2:
        return (240, 240, 230)
    return sky


def png(width: int, height: int, rows: list[bytes]) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + row for row in rows)  # filter type 0 on every row
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def main() -> None:
    rows = [bytes(c for x in range(W) for c in pixel(x, y)) for y in range(H)]
    out = pathlib.Path(__file__).resolve().parent.parent / "conv2d/examples/assets/scene.png"
    out.write_bytes(png(W, H, rows))
    print(f"wrote {out} ({W}x{H})")


if __name__ == "__main__":
    main()
