"""``python -m service.healthcheck``: exit 0 when /health/ready answers 200 (for HEALTHCHECK).

Uses only the standard library, so the image needs no curl.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

from service.config import get_settings


def main() -> int:
    """0 if the local server is ready, 1 otherwise."""
    url = f"http://127.0.0.1:{get_settings().port}/health/ready"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (fixed local URL)
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError):
        return 1


if __name__ == "__main__":
    sys.exit(main())
