"""TLS for the reference server: the server-side :class:`ssl.SSLContext` from PEM files.

``nimbus-ws serve --cert FILE [--key FILE]`` and ``ServerOptions(cert=..., key=...)``
both come here, so an embedding and the CLI get the same context: server side,
TLS 1.2 at least, the certificate chain and its private key loaded once at start.
An encrypted private key is refused rather than prompting on the terminal.
"""

from __future__ import annotations

import ssl

__all__ = ["TlsConfigError", "server_ssl_context"]


class TlsConfigError(ValueError):
    """The certificate or key cannot be used; the message is one line naming the file."""


def _no_passphrase() -> str:
    raise TlsConfigError("the private key is encrypted; give an unencrypted key (the server never prompts)")


def server_ssl_context(cert: str, key: str | None = None) -> ssl.SSLContext:
    """A server-side context (TLS >= 1.2) serving ``cert`` (PEM chain, leaf first) with
    ``key`` (PEM; ``None``: the key is in ``cert``). Raises :class:`TlsConfigError`."""
    for flag, path in (("--cert", cert), ("--key", key)):
        if path is None:
            continue
        try:
            with open(path, "rb") as f:
                f.read(1)
        except OSError as exc:
            raise TlsConfigError(f"cannot read {flag} {path}: {exc.strerror or exc}") from None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key, password=_no_passphrase)
    except TlsConfigError as exc:
        raise TlsConfigError(f"--key {key or cert}: {exc}") from None
    except ssl.SSLError as exc:
        what = f"--cert {cert}" + (f" and --key {key}" if key else "")
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise TlsConfigError(f"{what}: the private key does not match the certificate") from None
        raise TlsConfigError(
            f"{what}: not a PEM certificate chain and its private key ({exc.reason or exc})"
        ) from None
    return ctx
