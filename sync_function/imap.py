"""A thin, read-only IMAP client for the importer, on top of imapclient.

Only what an import needs: connect (implicit TLS, STARTTLS or plain), log in, STATUS, EXAMINE,
UID SEARCH and UID FETCH with `BODY.PEEK[]`, so that mail stays unread on the server. Failures
surface as the `ImapError` family with messages a person can act on; passwords never appear in
them (nor in logs: imaplib's protocol trace is switched off).
"""

from __future__ import annotations

import functools
import imaplib
import socket
import ssl
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Literal, cast

import imapclient
from imapclient.exceptions import LoginError

from sync_function import destinations
from sync_function.certs import context_trusting
from sync_function.destinations import PUBLIC_ONLY, DestinationPolicy

TlsMode = Literal["tls", "starttls", "plain"]
TLS_MODES: tuple[TlsMode, ...] = ("tls", "starttls", "plain")
SaslMechanism = Literal["XOAUTH2", "OAUTHBEARER"]
SASL_MECHANISMS: tuple[SaslMechanism, ...] = ("XOAUTH2", "OAUTHBEARER")
# Seconds any one socket operation may wait; the one default (sync_function.config refers to it).
DEFAULT_TIMEOUT_S = 30.0
# UIDs per command line; Dovecot's default line limit (64 KiB) holds far more, other servers less.
MAX_UIDS_PER_COMMAND = 1000


class ImapError(Exception):
    """Any IMAP failure. `transient` tells a retrying caller whether trying again may help."""

    transient = True


class ImapConnectionError(ImapError):
    """The server could not be reached, or the connection broke."""


class ImapTlsError(ImapConnectionError):
    """TLS could not be set up: wrong port for the mode, untrusted certificate, no STARTTLS."""

    transient = False


class ImapTimeout(ImapError):
    """The server did not answer in time."""


class ImapAuthError(ImapError):
    """The server rejected the username or password."""

    transient = False


class ImapTokenRejected(ImapAuthError):
    """The server refused an OAuth2 access token (expired or revoked): a fresh one may work."""


class ImapMailboxError(ImapError):
    """The mailbox does not exist or cannot be opened."""

    transient = False


class ImapProtocolError(ImapError):
    """The server answered a command with an error or with something unexpected."""


@dataclass(frozen=True, slots=True)
class MailboxStatus:
    uidvalidity: int
    uidnext: int
    messages: int
    highestmodseq: int | None


@dataclass(frozen=True, slots=True)
class Folder:
    """One LIST entry: its name and its attributes, e.g. `\\Noselect` or a special use like `\\Junk`."""

    name: str
    attributes: frozenset[str]


@dataclass(frozen=True, slots=True)
class FetchedMessage:
    uid: int
    size: int
    raw: bytes


class ImapSession:
    """A logged-in connection. Use `connect()` to make one; close it with `logout()` or `with`."""

    def __init__(self, client: imapclient.IMAPClient, *, where: str) -> None:
        self._client = client
        self._where = where
        # The protocol trace would log every message body (and costs time): off.
        client._imap.debug = 0
        self._tags_at_login = self._tag_count()
        self.commands: list[str] = []

    @property
    def round_trips(self) -> int:
        """Tagged commands sent since login, whoever sent them (this class or imapclient)."""
        return self._tag_count() - self._tags_at_login

    def _tag_count(self) -> int:
        return int(getattr(self._client._imap, "tagnum", 0))

    def __enter__(self) -> ImapSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.logout()

    @property
    def capabilities(self) -> frozenset[str]:
        with _mapped(self._where, "reading capabilities"):
            return frozenset(c.decode().upper() for c in self._client.capabilities())

    def status(self, mailbox: str) -> MailboxStatus:
        """STATUS: one round trip, no mailbox opened."""
        items = ["UIDVALIDITY", "UIDNEXT", "MESSAGES"]
        if "CONDSTORE" in self.capabilities:
            items.append("HIGHESTMODSEQ")
        self.commands.append("STATUS")
        with _mapped(self._where, f"STATUS {mailbox!r}", mailbox=mailbox):
            data = self._client.folder_status(mailbox, items)
        return _mailbox_status(data, self._where, mailbox)

    def list_folders(self) -> list[Folder]:
        """LIST "" "*": every folder with its attributes, in one round trip.

        Servers that announce SPECIAL-USE are asked for the special-use attributes explicitly
        (RFC 6154 `RETURN (SPECIAL-USE)`); others send them unasked, if they know them.
        """
        self.commands.append("LIST")
        with _mapped(self._where, "LIST"):
            if "SPECIAL-USE" in self.capabilities and "LIST-EXTENDED" in self.capabilities:
                imap = self._client._imap
                typ, data = imap._simple_command("LIST", '""', '"*"', "RETURN", "(SPECIAL-USE)")
                self._client._checkok("LIST", typ, data)
                typ, data = imap._untagged_response(typ, data, "LIST")
                entries = self._client._proc_folder_list(data)
            else:
                entries = self._client.list_folders()
        return [
            Folder(
                name=str(name),
                attributes=frozenset(
                    flag.decode() if isinstance(flag, bytes) else str(flag) for flag in flags
                ),
            )
            for flags, _delimiter, name in entries
        ]

    def examine(self, mailbox: str) -> MailboxStatus:
        """EXAMINE (read-only SELECT): nothing the importer does can change the mailbox."""
        self.commands.append("EXAMINE")
        with _mapped(self._where, f"EXAMINE {mailbox!r}", mailbox=mailbox):
            data = self._client.select_folder(mailbox, readonly=True)
        return _mailbox_status(
            {
                b"UIDVALIDITY": data.get(b"UIDVALIDITY"),
                b"UIDNEXT": data.get(b"UIDNEXT"),
                b"MESSAGES": data.get(b"EXISTS", 0),
                b"HIGHESTMODSEQ": data.get(b"HIGHESTMODSEQ"),
            },
            self._where,
            mailbox,
        )

    def search_uids(self, *, min_uid: int, larger_than: int | None = None) -> list[int]:
        """UIDs >= `min_uid` in the open mailbox (only those above `larger_than` bytes, if given)."""
        criteria: list[str | int] = ["UID", f"{max(min_uid, 1)}:*"]
        if larger_than is not None:
            criteria += ["LARGER", larger_than]
        self.commands.append("UID SEARCH")
        with _mapped(self._where, "UID SEARCH"):
            uids = self._client.search(criteria)
        # "n:*" always matches the highest UID, even when it is below n.
        return sorted(uid for uid in uids if uid >= min_uid)

    def fetch_sizes(self, uids: Sequence[int]) -> dict[int, int]:
        """RFC822.SIZE of each UID, without touching bodies."""
        sizes: dict[int, int] = {}
        for chunk in _chunks(uids, MAX_UIDS_PER_COMMAND):
            self.commands.append("UID FETCH RFC822.SIZE")
            with _mapped(self._where, "UID FETCH RFC822.SIZE"):
                data = self._client.fetch(chunk, ["RFC822.SIZE"])
            for uid, item in data.items():
                if b"RFC822.SIZE" in item:
                    sizes[uid] = int(item[b"RFC822.SIZE"])
        return sizes

    def fetch_messages(self, uids: Sequence[int]) -> list[FetchedMessage]:
        """Full bodies with BODY.PEEK[] (\\Seen stays unset). Expunged UIDs are simply absent."""
        out: list[FetchedMessage] = []
        for chunk in _chunks(uids, MAX_UIDS_PER_COMMAND):
            self.commands.append("UID FETCH BODY.PEEK[]")
            with _mapped(self._where, "UID FETCH BODY.PEEK[]"):
                data = self._client.fetch(chunk, ["RFC822.SIZE", "BODY.PEEK[]"])
            for uid in chunk:
                item = data.get(uid)
                raw = item.get(b"BODY[]") if item else None
                if isinstance(raw, bytes):
                    out.append(FetchedMessage(uid=uid, size=int(item.get(b"RFC822.SIZE", len(raw))), raw=raw))
        return out

    def logout(self) -> None:
        """Say goodbye if the connection still works; never raises."""
        try:
            self._client.logout()
        except Exception:  # the session is over either way
            with suppress(Exception):
                self._client.shutdown()


@functools.lru_cache(maxsize=1)
def _system_context() -> ssl.SSLContext:
    """The system trust store, loaded once: loading it costs ~17 ms, a third of a no-op sync."""
    return ssl.create_default_context()


def connect(
    *,
    host: str,
    port: int,
    tls_mode: TlsMode,
    username: str,
    password: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    ssl_context: ssl.SSLContext | None = None,
    ca_pem: str | None = None,
    access_token: str | None = None,
    sasl_mechanism: SaslMechanism = "XOAUTH2",
    allowed: DestinationPolicy = PUBLIC_ONLY,
) -> ImapSession:
    """Connect and log in, with the password or, given `access_token`, with SASL XOAUTH2/OAUTHBEARER.

    The destination is checked first (sync_function.destinations): non-public addresses are refused
    unless `allowed` lets them through (raises DestinationRefused or InvalidHost, both ValueErrors).
    Certificates are checked against, in this order: the account's own certificate authority
    (`ca_pem`, added to the system store), the caller's `ssl_context`, the system trust store.
    Host names are always checked.
    """
    if tls_mode not in TLS_MODES:
        raise ValueError(f"tls_mode must be one of {', '.join(TLS_MODES)} (got {tls_mode!r})")
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be within 1..65535 (got {port})")
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be positive (got {timeout_s})")
    if (password is None) == (access_token is None):
        raise ValueError("give either a password or an access token")
    if sasl_mechanism not in SASL_MECHANISMS:
        raise ValueError(
            f"sasl_mechanism must be one of {', '.join(SASL_MECHANISMS)} (got {sasl_mechanism!r})"
        )
    where = f"{host}:{port} ({tls_mode})"
    if ca_pem:
        context = context_trusting(ca_pem)
    else:
        context = ssl_context if ssl_context is not None else _system_context()
    with _mapped(where, "connecting", private_ca=bool(ca_pem)):
        client = destinations.imap_client(
            host,
            port=port,
            use_tls=tls_mode == "tls",
            ssl_context=context,
            timeout_s=timeout_s,
            policy=allowed,
        )
    try:
        if tls_mode == "starttls":
            with _mapped(where, "STARTTLS", private_ca=bool(ca_pem)):
                if b"STARTTLS" not in client.capabilities():
                    raise ImapTlsError(
                        f"IMAP server {where} does not offer STARTTLS; use tls_mode 'tls' with its "
                        "implicit-TLS port (usually 993)"
                    )
                client.starttls(context)
        if access_token is not None:
            _token_login(client, where, username, access_token, sasl_mechanism)
        with _mapped(where, "LOGIN"):
            try:
                if password is not None:
                    client.login(username, password)
            except LoginError as exc:
                raise ImapAuthError(
                    f"IMAP server {where} rejected the login for user {username!r}: {_server_text(exc)}. "
                    "Check the username and password (some providers need an app password)."
                ) from None
    except BaseException:
        # The original error matters, not one from closing the socket.
        with suppress(Exception):
            client.shutdown()
        raise
    return ImapSession(client, where=where)


def _token_login(
    client: imapclient.IMAPClient, where: str, username: str, token: str, mechanism: SaslMechanism
) -> None:
    if f"AUTH={mechanism}".encode() not in client.capabilities():
        raise ImapAuthError(
            f"IMAP server {where} does not offer {mechanism} sign-in; choose the other OAuth2 mechanism "
            "or check the server is the provider's"
        )
    with _mapped(where, mechanism):
        try:
            if mechanism == "XOAUTH2":
                client.oauth2_login(username, token)
            else:
                client.oauthbearer_login(username, token)
        except LoginError as exc:
            raise ImapTokenRejected(
                f"IMAP server {where} refused the OAuth2 access token for user {username!r}: "
                f"{_server_text(exc)}. Check that the account's email address matches the signed-in "
                "account and that the consent included IMAP access."
            ) from None


def _server_text(exc: BaseException) -> str:
    text = str(exc.args[0] if exc.args else exc)
    if text.startswith(("b'", 'b"')):
        text = text[2:-1]
    return text.strip() or type(exc).__name__


def _untrusted(where: str, exc: ssl.SSLCertVerificationError, *, private_ca: bool) -> str:
    """What the user can do about a certificate the connection did not trust."""
    reason = exc.verify_message or exc.reason or "certificate not trusted"
    if exc.verify_code == _HOSTNAME_MISMATCH:
        return (
            f"the TLS certificate of IMAP server {where} is not made out for that host name ({reason}); "
            "use the host name the server's certificate names (ask your provider for the exact IMAP host)"
        )
    if private_ca:
        return (
            f"the TLS certificate of IMAP server {where} is not signed by the certificate authority given "
            f"in ca_pem ({reason}); check that ca_pem is the authority that signed this server's certificate "
            "(or the server's own certificate if it is self-signed)"
        )
    return (
        f"the TLS certificate of IMAP server {where} is not trusted ({reason}); if the server uses a "
        "certificate from a private certificate authority or a self-signed one, add that authority's "
        "certificate (PEM) to the account as ca_pem; otherwise check the host name"
    )


# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH.
_HOSTNAME_MISMATCH = 62


@contextmanager
def _mapped(
    where: str, action: str, *, mailbox: str | None = None, private_ca: bool = False
) -> Iterator[None]:
    """Translate socket, TLS and imaplib errors into the ImapError family."""
    try:
        yield
    except ImapError:
        raise
    except TimeoutError as exc:
        raise ImapTimeout(f"IMAP server {where} did not answer in time while {action}") from exc
    except ssl.SSLCertVerificationError as exc:
        raise ImapTlsError(_untrusted(where, exc, private_ca=private_ca)) from exc
    except ssl.SSLError as exc:
        raise ImapTlsError(
            f"TLS with IMAP server {where} failed while {action} ({exc.reason or exc}); is this the "
            "right port for the tls_mode? ('tls' expects implicit TLS, usually port 993; "
            "'starttls' and 'plain' usually port 143)"
        ) from exc
    except ConnectionRefusedError as exc:
        raise ImapConnectionError(
            f"nothing accepts connections at {where} (connection refused); check the host and port"
        ) from exc
    except socket.gaierror as exc:
        raise ImapConnectionError(f"cannot resolve the IMAP host of {where}: {exc.strerror}") from exc
    except imaplib.IMAP4.abort as exc:
        raise ImapConnectionError(
            f"the connection to IMAP server {where} broke while {action}: {_server_text(exc)}"
        ) from exc
    except imaplib.IMAP4.error as exc:
        text = _server_text(exc)
        if mailbox is not None:
            raise ImapMailboxError(
                f"IMAP server {where} cannot open mailbox {mailbox!r}: {text}. Check the mailbox name."
            ) from exc
        raise ImapProtocolError(f"IMAP server {where} refused {action}: {text}") from exc
    except OSError as exc:
        raise ImapConnectionError(
            f"network error talking to IMAP server {where} while {action}: {exc.strerror or exc}"
        ) from exc


def _mailbox_status(data: dict[bytes, object], where: str, mailbox: str) -> MailboxStatus:
    try:
        uidvalidity = int(cast(int, data[b"UIDVALIDITY"]))
        uidnext = int(cast(int, data[b"UIDNEXT"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ImapProtocolError(
            f"IMAP server {where} did not report UIDVALIDITY and UIDNEXT for {mailbox!r}; "
            "incremental import needs both"
        ) from exc
    modseq = data.get(b"HIGHESTMODSEQ")
    return MailboxStatus(
        uidvalidity=uidvalidity,
        uidnext=uidnext,
        messages=int(cast(int, data.get(b"MESSAGES") or 0)),
        highestmodseq=int(cast(int, modseq)) if modseq is not None else None,
    )


def _chunks(items: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
