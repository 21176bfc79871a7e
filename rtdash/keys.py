"""Key files: the payment provider's key pair, and how every secret file is created.

A real deployment installs one key file: the provider's public key, all the order
service needs to verify notifies (`load_public_key`, at
settings.provider_public_key_path). The private key is the provider's; here only
the demo provider simulator and the payment load generator sign, with the demo
pair that `rtdash keys demo` (`create_demo_keys`) creates once. No service creates
or replaces a key by starting: a missing or unusable key stops it with a
`KeyFileError` that names the file and how to get it.

Every secret file (the demo private key, the gateway's visitor secret) is made by
`create_secret_file`: in a directory of mode 0700 (made so, or tightened), under a
temporary name opened with O_CREAT|O_EXCL and mode 0600, written and synced, then
hard-linked to its name. No other user can read it at any moment, nobody sees it
half written, and a file already there is never overwritten (a link, unlike a
rename, fails when the name exists).
"""
from __future__ import annotations

import logging
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

if TYPE_CHECKING:
    from rtdash.settings import Settings

log = logging.getLogger("rtdash.keys")

# RSA2 (SHA256withRSA) as Alipay requires it: 2048-bit keys at least.
MIN_KEY_BITS = 2048
GET_PUBLIC_KEY = ("install the payment provider's public key (PEM) there or set RTDASH_PROVIDER_PUBLIC_KEY to it; "
                  "for the demo provider, run `rtdash keys demo`")
GET_PRIVATE_KEY = ("the demo provider's key pair is created by `rtdash keys demo` "
                   "(or set RTDASH_PROVIDER_PRIVATE_KEY to the key)")


class KeyFileError(RuntimeError):
    """A key file that is missing, unreadable or not the key expected; the message says which and what to do."""


# --- creating files that hold secrets ------------------------------------------------------

def private_dir(path: Path) -> Path:
    """`path` as a directory only its owner can enter: made with mode 0700, or tightened to 0700.

    Its parents are made as usual. An existing directory that others may enter is
    tightened (and said so in the log); one this user cannot tighten is refused.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(path, 0o700)               # the umask can only take bits away
        return path
    except FileExistsError:
        pass
    info = os.stat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise KeyFileError(f"{path} should be a directory for key files, but is not one")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        try:
            os.chmod(path, 0o700)
        except OSError as exc:
            raise KeyFileError(f"{path} holds key files but other users may enter it (mode {mode:04o}) "
                               f"and it cannot be tightened: {exc.strerror}") from None
        log.warning("tightened %s from mode %04o to 0700: it holds key files", path, mode)
    return path


def create_file(path: Path, data: bytes, *, mode: int) -> bool:
    """Write `data` to a new file `path` with `mode`; False, and nothing written, if `path` exists.

    Written under a temporary name opened with O_EXCL and `mode` (the umask may only
    narrow it), synced, then linked to `path`: the file appears whole or not at all.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        _sync_dir(path.parent)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def create_secret_file(path: Path, data: bytes) -> bool:
    """`create_file` with mode 0600 in a 0700 directory: True if this call created `path`."""
    private_dir(path.parent)
    return create_file(path, data, mode=0o600)


def ensure_secret(path: Path, make: Callable[[], bytes]) -> bytes:
    """The secret in `path`, created first with `make()` if there is none (the first process to create it wins)."""
    if not path.exists() and create_secret_file(path, make()):
        log.info("generated %s", path)
    return path.read_bytes()


def _sync_dir(path: Path) -> None:
    """Make a new name in `path` durable (the file's own data was synced before)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- the provider's keys ------------------------------------------------------------------

def load_public_key(path: Path) -> rsa.RSAPublicKey:
    """The provider's RSA public key from the PEM file `path`; KeyFileError saying what is wrong otherwise."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"no payment provider public key at {path}: {GET_PUBLIC_KEY}") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read the payment provider public key at {path} ({exc.strerror}): "
                           f"{GET_PUBLIC_KEY}") from None
    if b"PRIVATE KEY" in data:
        raise KeyFileError(f"{path} holds a private key, where only the provider's public key belongs: "
                           f"{GET_PUBLIC_KEY}")
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise KeyFileError(f"{path} is not a PEM public key: {GET_PUBLIC_KEY}") from None
    return _checked_rsa(key, rsa.RSAPublicKey, path, GET_PUBLIC_KEY)


def load_private_key(path: Path) -> rsa.RSAPrivateKey:
    """The provider's RSA private key from the PEM file `path`, which only its owner may read."""
    path = Path(path)
    try:
        info = os.stat(path)
        data = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"no payment provider private key at {path}: {GET_PRIVATE_KEY}") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read the payment provider private key at {path} ({exc.strerror})") from None
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise KeyFileError(f"the private key {path} may be read by other users (mode {mode:04o}): "
                           f"run `chmod 600 {path}`")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise KeyFileError(f"{path} is not an unencrypted PEM private key: {GET_PRIVATE_KEY}") from None
    return _checked_rsa(key, rsa.RSAPrivateKey, path, GET_PRIVATE_KEY)


def _checked_rsa(key, kind: type, path: Path, how: str):
    if not isinstance(key, kind):
        raise KeyFileError(f"{path} is not an RSA key (notifies are signed RSA2, SHA256withRSA): {how}")
    if key.key_size < MIN_KEY_BITS:
        raise KeyFileError(f"{path} is a {key.key_size}-bit key; RSA2 needs {MIN_KEY_BITS} bits at least: {how}")
    return key


def create_demo_keys(private_path: Path, public_path: Path) -> list[Path]:
    """Create the demo provider's key pair where it is missing; the files this call wrote.

    Never overwrites: with both files there it only checks they are one pair; with
    only the private key it writes the public half. A public key without its
    private key is refused: it may be a real provider's key, which no demo key
    can match.
    """
    private_path, public_path = Path(private_path), Path(public_path)
    if public_path.exists() and not private_path.exists():
        raise KeyFileError(f"a provider public key is installed at {public_path} without its private key at "
                           f"{private_path}, so it is not the demo pair; the demo needs a pair of its own: set "
                           "RTDASH_PROVIDER_PUBLIC_KEY and RTDASH_PROVIDER_PRIVATE_KEY to other paths")
    written = []
    if not private_path.exists():
        pem = rsa.generate_private_key(public_exponent=65537, key_size=MIN_KEY_BITS).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        if create_secret_file(private_path, pem):
            written.append(private_path)
    public = load_private_key(private_path).public_key()    # ours, or the one another process made first
    public_path.parent.mkdir(parents=True, exist_ok=True)
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    if not public_path.exists() and create_file(public_path, pem, mode=0o644):
        written.append(public_path)
    elif load_public_key(public_path).public_numbers() != public.public_numbers():
        raise KeyFileError(f"{public_path} is not the public half of {private_path}; remove one of them "
                           "to have the demo pair created again")
    return written


def demo_keys(settings: Settings) -> list[Path]:
    """`create_demo_keys` at the settings' paths: what `rtdash keys demo` runs."""
    return create_demo_keys(settings.provider_private_key_path, settings.provider_public_key_path)
