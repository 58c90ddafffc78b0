"""The files of a backup: the dump, its manifest and the ``sha256sum -c`` checksum file.

Dumps hold personal data: files are created ``0600`` in a ``0700`` directory, written durably
(temporary file, fsync, rename), and the checksum file is written last, so it only ever exists
for a complete backup.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import msgspec

from infra.backup.model import BackupError, IntegrityError, Manifest

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = [
    "DUMP_SUFFIX",
    "BackupFiles",
    "checksum_path",
    "load_manifest",
    "sha256_file",
    "verify_checksums",
]

_CHUNK: Final = 1 << 20
DUMP_SUFFIX: Final = ".dump"
CHECKSUM_SUFFIX: Final = ".dump.sha256"
MANIFEST_SUFFIX: Final = ".manifest.json"
_CHECKSUM_LINE: Final = re.compile(r"^(?P<digest>[0-9a-f]{64}) [ *](?P<name>[^/\\]+)$")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (mode 0600) durably: temp file, fsync, rename."""
    tmp = path.with_name(path.name + ".partial")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class BackupFiles:
    """The paths of one backup (file system work runs in a thread, off the event loop)."""

    dump: Path
    manifest: Path
    checksum: Path

    @property
    def partial(self) -> Path:
        """Where pg_dump writes until the dump is complete."""
        return self.dump.with_name(self.dump.name + ".partial")

    @classmethod
    def plan(cls, out: Path, base: str) -> BackupFiles:
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
        files = cls(
            dump=out / f"{base}{DUMP_SUFFIX}",
            manifest=out / f"{base}{MANIFEST_SUFFIX}",
            checksum=out / f"{base}{CHECKSUM_SUFFIX}",
        )
        if files.dump.exists() or files.checksum.exists():
            raise BackupError(f"{files.dump} already exists")
        return files

    def seal(self, describe: Callable[[str, int], Manifest]) -> tuple[str, int]:
        """Make the dump final, then write its manifest and, last, the checksum file.

        A checksum file therefore only ever exists for a complete backup.

        Returns:
            The dump's SHA-256 and size.
        """
        os.chmod(self.partial, 0o600)
        _fsync(self.partial)
        self.partial.replace(self.dump)
        digest, size = sha256_file(self.dump), self.dump.stat().st_size
        manifest = msgspec.json.format(msgspec.json.encode(describe(digest, size)), indent=2)
        _write_private(self.manifest, manifest + b"\n")
        manifest_digest = hashlib.sha256(manifest + b"\n").hexdigest()
        _write_private(
            self.checksum,
            f"{digest}  {self.dump.name}\n{manifest_digest}  {self.manifest.name}\n".encode(),
        )
        return digest, size


def checksum_path(dump: Path) -> Path:
    name = dump.name.removesuffix(DUMP_SUFFIX) if dump.name.endswith(DUMP_SUFFIX) else dump.name
    return dump.with_name(name + CHECKSUM_SUFFIX)


def verify_checksums(dump: Path | str) -> dict[str, str]:
    """Check the dump (and every other file listed) against its ``.dump.sha256`` file.

    Returns:
        File name -> verified SHA-256.

    Raises:
        IntegrityError: The checksum file is missing or malformed, does not list the dump, or a
            listed file is missing or differs.
    """
    dump = Path(dump)
    checksum_file = checksum_path(dump)
    if not checksum_file.is_file():
        raise IntegrityError(f"no checksum file {checksum_file.name} next to the dump: refusing")
    expected: dict[str, str] = {}
    for line in checksum_file.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        match = _CHECKSUM_LINE.match(line.strip())
        if match is None:
            raise IntegrityError(f"{checksum_file.name} is malformed: refusing")
        expected[match["name"]] = match["digest"]
    if dump.name not in expected:
        raise IntegrityError(f"{checksum_file.name} does not list {dump.name}: refusing")
    for name, digest in expected.items():
        path = dump.with_name(name)
        if not path.is_file():
            raise IntegrityError(f"{name} is listed in {checksum_file.name} but missing")
        if sha256_file(path) != digest:
            raise IntegrityError(f"{name} does not match its SHA-256: corrupted or altered")
    return expected


def load_manifest(dump: Path, verified: Mapping[str, str]) -> Manifest | None:
    name = dump.name.removesuffix(DUMP_SUFFIX) + MANIFEST_SUFFIX
    if name not in verified:
        return None
    try:
        return msgspec.json.decode(dump.with_name(name).read_bytes(), type=Manifest)
    except msgspec.DecodeError as exc:
        raise IntegrityError(f"{name} is not a backup manifest: {exc}") from None
