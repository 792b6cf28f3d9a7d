"""Which file a proxy path names, and whether it may be used: the symbolic-link policy and the proxy checks.

**Symbolic links.** ``X509_USER_PROXY`` may name a link (sites point it at a shared location, users
at the proxy of another tool). A link is followed only if the link itself belongs to the user or
to root; any other link on the way is refused, for reading as for writing. In a sticky directory
such as /tmp anybody can create a link at a name the user has not taken yet (``/tmp/x509up_u1000``
before the first ``dirac-proxy-init``), and following it would read, lock or rewrite whatever the
other user chose; a link of the user's own (or root's) is the user's decision. The same rule
resolves the caller's proxy in :mod:`diracx_bridge.identity`, so the path a session uses is the
path the store accepts. Writes go to the resolved file (the rename happens in its directory), so
the link stays a link.
"""

from __future__ import annotations

import errno
import os
import stat

from diracx_bridge.errors import NotAProxyFile, ProxyFileNotFound, TokenFileError, UnsafeTokenFile

#: Group and other permission bits: none of them may be set on a proxy (the grid tools require 0600/0400).
UNSAFE_MODE_BITS = stat.S_IRWXG | stat.S_IRWXO
#: As the kernel's own limit (``MAXSYMLINKS``): more links than this on one path is a loop.
_MAX_LINKS = 40


def resolve_proxy_path(path: str | os.PathLike[str]) -> str:
    """The absolute path of the file ``path`` names, following only links of the user or root.

    A missing component ends the walk (the rest is appended as it is): the caller reports the
    missing proxy. Raises :class:`UnsafeTokenFile` for a link of another user, or a link loop.
    """
    given = os.fspath(path)
    pending = [part for part in os.path.abspath(given).split("/") if part]
    resolved = "/"
    links = 0
    uid = os.geteuid()
    while pending:
        name = pending.pop(0)
        if name == ".":
            continue
        if name == "..":
            resolved = os.path.dirname(resolved)
            continue
        candidate = os.path.join(resolved, name)
        try:
            st = os.lstat(candidate)
        except OSError:  # missing or unreachable: the open that follows says which
            return os.path.join(candidate, *pending)
        if not stat.S_ISLNK(st.st_mode):
            resolved = candidate
            continue
        links += 1
        if links > _MAX_LINKS:
            raise UnsafeTokenFile(f"the proxy path {given} has a loop of symbolic links; fix X509_USER_PROXY", given)
        if st.st_uid not in (uid, 0):
            raise UnsafeTokenFile(
                f"the proxy path {given} goes through the symbolic link {candidate}, which belongs to uid {st.st_uid}, "
                f"not to you (uid {uid}) or root; the bridge follows only links of yours or root's: point "
                f"X509_USER_PROXY at the real file, or remove the link (rm {candidate})",
                given,
            )
        target = os.readlink(candidate)
        pending = [part for part in target.split("/") if part] + pending
        if target.startswith("/"):
            resolved = "/"
    return resolved


def open_proxy(path: str, given: str) -> int:
    """Open the (resolved) proxy for reading: no link followed now, no blocking on a FIFO, no tty."""
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise ProxyFileNotFound(given) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeTokenFile(
                f"the proxy file {path} became a symbolic link while the bridge was opening it; retry, and check "
                "who else writes to its directory",
                given,
            ) from None
        raise TokenFileError(
            f"cannot open the proxy file {path}: {exc.strerror}", given, fix="it must be a file you own with mode 0600"
        ) from None


def check_proxy_stat(st: os.stat_result, path: str) -> None:
    """The checks the grid tools make on a proxy: a regular file, ours, 0600 or stricter."""
    if not stat.S_ISREG(st.st_mode):
        raise NotAProxyFile(f"{path} is not a regular file, so it is not a proxy file", path)
    uid = os.geteuid()
    if st.st_uid != uid:
        raise UnsafeTokenFile(
            f"the proxy file {path} belongs to uid {st.st_uid}, not to you (uid {uid}); a proxy must belong to "
            "the user who uses it: run dirac-proxy-init to write one of your own, or have its owner fix it",
            path,
        )
    if st.st_mode & UNSAFE_MODE_BITS:
        raise UnsafeTokenFile(
            f"the proxy file {path} is accessible by group or others (mode {stat.S_IMODE(st.st_mode):04o}); it holds "
            f"a private key and DiracX tokens, so it must be private: run 'chmod 600 {path}' "
            "(and consider the key and tokens compromised if others could read it)",
            path,
        )
