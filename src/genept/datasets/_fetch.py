"""Fetching data files with pooch: one set of rules for every download of ``datasets``.

* A download is checked against its known hash; a file that fails the check is removed
  by pooch and reported as ``error`` naming the URL, the expected hash and what to do.
* A network failure becomes an :class:`OSError` naming the URL and ``hint``.
* A local file (``url=<path>``) is checked in place and left there when it fails.
"""

from __future__ import annotations

from pathlib import Path


def check_file(
    path: Path,
    known_hash: str,
    *,
    error: type[Exception] = ValueError,
    hint: str = "replace it or check known_hash",
) -> None:
    """Raise ``error`` unless the local file ``path`` has ``known_hash`` (``"alg:digest"``)."""
    from pooch.hashes import file_hash, hash_algorithm

    alg = hash_algorithm(known_hash)
    got = file_hash(str(path), alg=alg)
    if got.lower() != known_hash.split(":")[-1].lower():
        raise error(
            f"{path} failed its hash check ({alg} check, expected {known_hash}, got "
            f"{alg}:{got}); the file was left in place: {hint}"
        )


def retrieve(
    url: str,
    *,
    known_hash: str | None,
    fname: str,
    path: Path,
    progress: bool,
    error: type[Exception] = ValueError,
    hint: str = "check the network, or download the file yourself and pass its path",
) -> Path:
    """``pooch.retrieve`` with the rules above; the path of the checked file."""
    import pooch
    import requests

    downloader = None
    if url.startswith(("http://", "https://")):
        downloader = pooch.HTTPDownloader(progressbar=progress, timeout=60)
    try:
        return Path(
            pooch.retrieve(
                url,
                known_hash=known_hash,
                fname=fname,
                path=path,
                downloader=downloader,
                progressbar=progress,
            )
        )
    except ValueError as e:
        if "hash" not in str(e).lower():
            raise
        alg = (known_hash or "").split(":")[0] if ":" in (known_hash or "") else "md5"
        raise error(
            f"download of {url} failed its hash check ({alg} check, expected {known_hash}): "
            "the file is truncated or was tampered with and has been removed; retry or "
            "check the url"
        ) from None
    except requests.exceptions.RequestException as e:
        raise OSError(f"could not download {url} ({e}); {hint}") from e
