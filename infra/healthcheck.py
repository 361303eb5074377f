"""Container health probe: GET http://127.0.0.1:$PORT<path>, exit 0 on a 2xx answer.

Standard library only (it runs with the image's system Python). Without PORT, the port is the
README default of the service named on the container's command line (``run payment`` → 8082).
"""

from __future__ import annotations

import os
import sys
import urllib.request

DEFAULT_PORTS = {"order": 8081, "payment": 8082, "inventory": 8083, "notification": 8084}


def port() -> int:
    if os.environ.get("PORT"):
        return int(os.environ["PORT"])
    try:
        with open("/proc/1/cmdline", "rb") as cmdline:
            args = cmdline.read().decode(errors="replace").split("\0")
    except OSError:
        args = []
    for name, default in DEFAULT_PORTS.items():
        if name in args:
            return default
    return DEFAULT_PORTS["order"]


def main() -> int:
    path = sys.argv[1] if len(sys.argv) > 1 else "/health/live"
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port()}{path}", timeout=3) as response:
            return 0 if 200 <= response.status < 300 else 1
    except Exception as exc:  # refused, 503, timeout: all unhealthy
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
