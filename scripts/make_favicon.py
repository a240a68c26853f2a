"""Draws service/web/favicon.ico: a white handwritten-looking 7 on the page's accent blue."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

TARGET = Path(__file__).resolve().parent.parent / "service" / "web" / "favicon.ico"


def main() -> None:
    size = 64
    icon = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(icon)
    draw.rounded_rectangle((0, 0, size - 1, size - 1), radius=12, fill="#2f6fdf")
    draw.line([(16, 17), (47, 15), (27, 51)], fill="white", width=7, joint="curve")
    draw.line([(24, 33), (42, 33)], fill="white", width=5)
    icon.save(TARGET, sizes=[(16, 16), (32, 32), (48, 48)])
    print(f"wrote {TARGET}")


if __name__ == "__main__":
    main()
