"""What a container enforces, seen from inside it, and the check of those facts from outside.

Inside (no arguments; only the standard library, so ``podman exec CONTAINER python -c "$(cat
scripts/container_facts.py)"`` runs it in the image): prints one JSON object with the process's
user, effective capabilities, no-new-privileges and seccomp modes, whether the root filesystem
and ``/tmp`` can be written, and the cgroup's memory limit and CPU quota (v1 or v2).

Outside: ``python scripts/container_facts.py --check --uid 10001 --memory-bytes 1073741824
--cpus 2 < facts.json`` exits 1 naming every fact that differs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path


def _status_fields() -> dict[str, str]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = value.strip()
    return fields


def _writable(directory: str) -> bool:
    try:
        with tempfile.NamedTemporaryFile(dir=directory):
            return True
    except OSError:
        return False


def _first_readable(*paths: str) -> str | None:
    for path in paths:
        try:
            return Path(path).read_text().strip()
        except OSError:
            continue
    return None


def _cpu_limit() -> float | None:
    """CPUs allowed by the cgroup: quota / period (v2 ``cpu.max`` or v1 ``cfs_*``)."""
    v2 = _first_readable("/sys/fs/cgroup/cpu.max")
    if v2 is not None:
        v2_quota, v2_period = v2.split()
        return None if v2_quota == "max" else int(v2_quota) / int(v2_period)
    quota = _first_readable(
        "/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu.cfs_quota_us"
    )
    period = _first_readable(
        "/sys/fs/cgroup/cpu/cpu.cfs_period_us", "/sys/fs/cgroup/cpu.cfs_period_us"
    )
    if quota is None or period is None or int(quota) < 0:
        return None
    return int(quota) / int(period)


def facts() -> dict[str, object]:
    """This process's view of its container."""
    status = _status_fields()
    memory = _first_readable(
        "/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"
    )
    return {
        "uid": os.getuid(),
        "gid": os.getgid(),
        "effective_capabilities": int(status["CapEff"], 16),
        "no_new_privileges": status.get("NoNewPrivs") == "1",
        "seccomp_filtering": status.get("Seccomp") == "2",
        "root_writable": _writable("/") or _writable("/app"),
        "tmp_writable": _writable("/tmp"),
        "memory_limit_bytes": None if memory in (None, "max") else int(memory),
        "cpu_limit": _cpu_limit(),
    }


def problems(found: dict[str, object], uid: int, memory_bytes: int, cpus: float) -> list[str]:
    """Every fact of ``found`` that differs from a hardened container with these limits."""
    expected = {
        "uid": uid,
        "effective_capabilities": 0,
        "no_new_privileges": True,
        "seccomp_filtering": True,
        "root_writable": False,
        "tmp_writable": True,
        "memory_limit_bytes": memory_bytes,
        "cpu_limit": cpus,
    }
    return [
        f"{name}: found {found.get(name)!r}, expected {value!r}"
        for name, value in expected.items()
        if found.get(name) != value
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="check facts read from stdin")
    parser.add_argument("--uid", type=int, default=10001)
    parser.add_argument("--memory-bytes", type=int, default=2**30)
    parser.add_argument("--cpus", type=float, default=2.0)
    parser.add_argument("--name", default="container")
    args = parser.parse_args()
    if not args.check:
        print(json.dumps(facts()))
        return 0
    found = json.loads(sys.stdin.read())
    wrong = problems(found, args.uid, args.memory_bytes, args.cpus)
    for line in wrong:
        print(f"{args.name}: {line}", file=sys.stderr)
    if not wrong:
        print(
            f"{args.name}: uid {found['uid']}, no capabilities, no-new-privileges, seccomp, "
            f"read-only root, writable /tmp, {found['memory_limit_bytes']} B, "
            f"{found['cpu_limit']} CPUs"
        )
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
