"""Finding data files: a local folder, the cache, or a verified download — never a half-written file.

Look-up order for a file ``NAME`` of data set ``SET``:

1. ``data_dir/NAME`` when a ``--data-dir`` is given (the file is used as it is; for ``X.gz`` an unpacked
   ``X`` also does);
2. ``CACHE/SET/NAME`` where ``CACHE`` is ``$FUNCDL_DATA`` or ``~/.cache/funcdl``;
3. a download from the canonical address into ``CACHE/SET/NAME.part-<pid>``, checked against its checksum,
   then renamed to ``NAME`` (``os.replace`` is atomic, so the cache never holds a partial file).

With ``FUNCDL_OFFLINE=1`` (or no network) step 3 fails with a message that says which file is missing,
where to put it and where to fetch it from.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.request
from pathlib import Path

__all__ = ["cache_dir", "fetch", "checksum", "MissingDataError"]


class MissingDataError(FileNotFoundError):
    """A data file is neither local nor downloadable; the message says what to do."""


def cache_dir(dataset: str | None = None) -> Path:
    """``$FUNCDL_DATA`` or ``~/.cache/funcdl`` (joined with the data set's name when given)."""
    root = Path(os.environ.get("FUNCDL_DATA") or Path.home() / ".cache" / "funcdl").expanduser()
    return root / dataset if dataset else root


def checksum(path: Path, algorithm: str = "md5", decompress: bool = False) -> str:
    """Hex digest of a file's bytes, or of its gunzipped content with ``decompress=True``."""
    h = hashlib.new(algorithm)
    opener = gzip.open if decompress else open
    with opener(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _offline() -> bool:
    return os.environ.get("FUNCDL_OFFLINE", "").lower() not in ("", "0", "false", "no")


def fetch(dataset: str, name: str, url: str, *, md5: str | None = None, sha256: str | None = None,
          decompressed: bool = False,
          data_dir: str | os.PathLike | None = None, timeout: float = 60.0) -> Path:
    """The path of data file ``name`` of ``dataset`` (see the module docstring for the look-up order).

    ``md5`` / ``sha256`` is the expected checksum of the file, or of its gunzipped content with
    ``decompressed=True``.
    """
    if data_dir is not None:
        local = Path(data_dir).expanduser() / name
        if local.is_file():
            return local
        if local.suffix == ".gz" and local.with_suffix("").is_file():     # an already unpacked copy
            return local.with_suffix("")
        raise MissingDataError(
            f"{dataset}: {name} is not in --data-dir {data_dir}. Put the file there, or leave out --data-dir to "
            f"use the cache {cache_dir(dataset)} (downloaded from {url})."
        )
    target = cache_dir(dataset) / name
    if target.is_file():
        return target
    hint = (f"{dataset}: {name} is missing. Download it from {url} and put it in {target.parent} "
            f"(or in a folder you pass with --data-dir; the cache folder is set by $FUNCDL_DATA).")
    if _offline():
        raise MissingDataError(hint + " (FUNCDL_OFFLINE is set, so no download was tried.)")
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(f"{name}.part-{os.getpid()}")
    try:
        print(f"downloading {url} -> {target}", flush=True)
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                out.write(chunk)
        for algorithm, expected in (("md5", md5), ("sha256", sha256)):
            if expected is None:
                continue
            got = checksum(part, algorithm, decompress=decompressed)
            if got != expected:
                raise MissingDataError(
                    f"{dataset}: the download of {url} has {algorithm} {got}, expected {expected} "
                    f"({'decompressed content' if decompressed else 'file'}); not kept. " + hint)
        os.replace(part, target)
    except OSError as err:
        if isinstance(err, MissingDataError):
            raise
        raise MissingDataError(f"{hint} (download failed: {err})") from err
    finally:
        if part.exists():
            part.unlink()
    return target
