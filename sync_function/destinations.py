"""Where the service may connect on a user's behalf: host names checked as host names, addresses checked
against loopback, private, link-local, multicast, reserved and unspecified ranges unless an operator
allows them, and connections pinned to the address that was checked.

IMAP hosts come from users, so every connection to one is a door into the network the service runs in
(the database port, cloud metadata at 169.254.169.254, internal services). The check runs when an account
is added and again at every connect; the socket then goes to the checked address itself, never to a
second resolution of the name, so a DNS answer that changes in between (rebinding) cannot slip through.
TLS still verifies the certificate against the name (SNI and hostname checks use the name).

OAuth2 token endpoints come from users too (custom providers), and an HTTP POST carrying the client
secret and refresh token is a wider door than an IMAP login: `check_url` applies the same rules to a
URL (https only, plain http only to allowed destinations), with its own allow-list, and `CheckedUrl`
gives the request to send to each checked address.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from imapclient import IMAPClient, imap4, tls

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_HOST_LENGTH = 253
MAX_LABEL_LENGTH = 63
_LABEL_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


class InvalidHost(ValueError):
    """The text is neither a host name nor an IP address. The message is safe to return."""


class DestinationRefused(ValueError):
    """The destination resolves to an address the service must not connect to. Safe to return."""


@dataclass(frozen=True, slots=True)
class DestinationPolicy:
    """Which otherwise refused destinations an operator allows: networks (CIDR) and host names."""

    networks: tuple[IpNetwork, ...] = ()
    hosts: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def parse(cls, entries: Iterable[str]) -> DestinationPolicy:
        """Entries are CIDRs (`10.0.0.0/8`), addresses (`127.0.0.1`) or host names (`mail.internal`)."""
        networks: list[IpNetwork] = []
        hosts: set[str] = set()
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                try:
                    hosts.add(normalize_host(entry))
                except InvalidHost:
                    raise ValueError(
                        f"{entry!r} is neither a network (CIDR), an address nor a host name"
                    ) from None
        return cls(networks=tuple(networks), hosts=frozenset(hosts))

    def allows(self, host: str, address: IpAddress) -> bool:
        if host in self.hosts:
            return True
        return any(address.version == net.version and address in net for net in self.networks)


# Refuses every non-public destination: the default where no operator said otherwise.
PUBLIC_ONLY = DestinationPolicy()


def normalize_host(value: str) -> str:
    """The host as it will be dialled: an IP address in canonical form, or the IDNA (ASCII) host name.

    Raises InvalidHost for empty labels, labels over 63 characters, names over 253, characters a host
    name cannot hold, Unicode that IDNA cannot encode, and all-numeric names such as `0` or `127.1`
    (the resolver would read them as IPv4 shorthand).
    """
    text = value.strip()
    literal = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        return str(ipaddress.ip_address(literal))
    except ValueError:
        pass
    if text.endswith("."):
        text = text[:-1]  # the root label: `example.com.` is `example.com`
    if not text:
        raise InvalidHost("must be a host name or an IP address, e.g. imap.example.com")
    labels = text.split(".")
    if any(not label for label in labels):
        raise InvalidHost("is not a valid host name: it has an empty label (two dots in a row?)")
    ascii_labels = []
    for label in labels:
        try:
            encoded = label.encode("idna").decode("ascii") if not label.isascii() else label.lower()
        except UnicodeError:
            raise InvalidHost(f"is not a valid host name: {label!r} cannot be encoded as IDNA") from None
        if not 1 <= len(encoded) <= MAX_LABEL_LENGTH:
            raise InvalidHost(
                f"is not a valid host name: each label holds 1 to {MAX_LABEL_LENGTH} characters"
            )
        if not set(encoded) <= _LABEL_CHARACTERS or encoded.startswith("-") or encoded.endswith("-"):
            raise InvalidHost("is not a valid host name: labels hold letters, digits and inner hyphens only")
        ascii_labels.append(encoded)
    host = ".".join(ascii_labels)
    if len(host) > MAX_HOST_LENGTH:
        raise InvalidHost(f"is not a valid host name: longer than {MAX_HOST_LENGTH} characters")
    if ascii_labels[-1].isdigit() or _looks_numeric(ascii_labels[-1]):
        raise InvalidHost("is neither a host name nor an IP address (a top-level label cannot be numeric)")
    return host


def _looks_numeric(label: str) -> bool:
    # inet_aton also reads hexadecimal parts (`0x7f`): a resolver would dial them as an address.
    return label.startswith("0x") and all(c in "0123456789abcdef" for c in label[2:])


def is_public(address: IpAddress) -> bool:
    """False for loopback, private, link-local, multicast, reserved and unspecified addresses."""
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour
        if mapped is not None and not is_public(mapped):
            return False
    return not (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


IMAP_SETTING = "AUTOSYNC_IMAP_ALLOWED_NETWORKS"


def resolve_checked(
    host: str, port: int, policy: DestinationPolicy, *, setting: str = IMAP_SETTING
) -> list[tuple[int, IpAddress]]:
    """Every address `host` resolves to, each checked; refuses the host if any one is not allowed.

    Refusing on any (not only on all) means a name cannot mix a public address with an internal one and
    win the race. Raises InvalidHost, DestinationRefused, or socket.gaierror when the name does not resolve.
    `setting` names the allow-list in the refusal.
    """
    name = normalize_host(host)
    infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    addresses: list[tuple[int, IpAddress]] = []
    for family, _, _, _, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if not is_public(address) and not policy.allows(name, address):
            raise DestinationRefused(
                f"connections to {name} are not allowed: it resolves to {address}, a loopback, private, "
                f"link-local, multicast or reserved address (an operator can allow it with {setting})"
            )
        if (family, address) not in addresses:
            addresses.append((family, address))
    if not addresses:
        raise DestinationRefused(f"{name} resolves to no address")
    return addresses


@dataclass(frozen=True, slots=True)
class CheckedUrl:
    """An http(s) URL whose host was checked, with the addresses to send its requests to."""

    url: str
    host: str
    addresses: tuple[IpAddress, ...]

    def pinned(self, address: IpAddress) -> tuple[str, dict[str, str], dict[str, str]]:
        """The URL with `address` in place of the host, the Host header, and httpx's request extensions.

        The TLS handshake still names the host (`sni_hostname`: SNI, and the certificate is checked
        against it), and the Host header carries it, so the server sees the request it would have seen.
        """
        parts = urlsplit(self.url)
        literal = f"[{address}]" if address.version == 6 else str(address)
        port = f":{parts.port}" if parts.port is not None else ""
        url = urlunsplit((parts.scheme, literal + port, parts.path, parts.query, ""))
        name = f"[{self.host}]" if ":" in self.host else self.host
        return url, {"Host": name + port}, {"sni_hostname": self.host}


def check_url(url: str, policy: DestinationPolicy, *, setting: str) -> CheckedUrl:
    """Check an http(s) URL the service will POST to: https, or plain http to an allowed destination;
    every address its host resolves to public or allowed by `policy`.

    Raises InvalidHost (not a usable URL), DestinationRefused, or socket.gaierror (https to a name
    that does not resolve). Messages are safe to return and name `setting`.
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise InvalidHost("must be an https URL, e.g. https://login.example.com/oauth2/token")
    if parts.username is not None or parts.password is not None:
        raise InvalidHost("must not carry a user name or password")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise InvalidHost("has an invalid port") from None
    host = normalize_host(parts.hostname)
    plain = DestinationRefused(
        f"must be an https URL (plain http only to a destination an operator allows in {setting})"
    )
    if parts.scheme == "http" and not (policy.networks or policy.hosts):
        raise plain
    try:
        resolved = resolve_checked(host, port, policy, setting=setting)
    except socket.gaierror:
        if parts.scheme == "http":
            raise plain from None
        raise
    addresses = tuple(address for _, address in resolved)
    if parts.scheme == "http" and not all(policy.allows(host, address) for address in addresses):
        raise plain
    return CheckedUrl(url=url.strip(), host=host, addresses=addresses)


def _pinned_socket(addresses: list[tuple[int, IpAddress]], port: int, timeout: float | None) -> socket.socket:
    """A TCP connection to the first checked address that answers."""
    last: OSError | None = None
    for _family, address in addresses:
        try:
            return socket.create_connection((str(address), port), timeout=timeout)
        except OSError as exc:
            last = exc
    assert last is not None
    raise last


class _GreetingCapabilities:
    """imaplib asks CAPABILITY right after the greeting, even when the greeting already announced them.

    Servers that announce them (RFC 3501 7.1: `* OK [CAPABILITY ...]`, as Dovecot and Cyrus do) spare
    the round trip, a quarter of the commands of a sync that finds nothing new. A greeting without them
    gets imaplib's own command. Either way the answer is consumed, as imaplib's command would, so that
    imapclient takes the capabilities sent after LOGIN, not these, once signed in.
    """

    untagged_responses: dict[str, list[bytes]]
    capabilities: tuple[str, ...]
    _encoding: str

    def _get_capabilities(self) -> None:
        announced = self.untagged_responses.pop("CAPABILITY", None)
        if not announced or not announced[-1]:
            super()._get_capabilities()  # type: ignore[misc]
            return
        self.capabilities = tuple(announced[-1].decode(self._encoding).upper().split())


class _PinnedPlain(_GreetingCapabilities, imap4.IMAP4WithTimeout):
    def __init__(self, host: str, port: int, timeout: float | None, addresses: list[tuple[int, IpAddress]]):
        self._addresses = addresses
        super().__init__(host, port, timeout)

    def _create_socket(self, timeout: float | None = None) -> socket.socket:
        return _pinned_socket(self._addresses, self.port, timeout if timeout is not None else self._timeout)


class _PinnedTls(_GreetingCapabilities, tls.IMAP4_TLS):
    def __init__(
        self,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None,
        timeout: float | None,
        addresses: list[tuple[int, IpAddress]],
    ):
        self._addresses = addresses
        super().__init__(host, port, ssl_context, timeout)

    def _create_socket(self, timeout: float | None = None) -> socket.socket:
        sock = _pinned_socket(self._addresses, self.port, timeout if timeout is not None else self._timeout)
        try:
            return tls.wrap_socket(sock, self.ssl_context, self.host)  # SNI and hostname check: the name
        except BaseException:
            sock.close()
            raise


class PinnedIMAPClient(IMAPClient):
    """An IMAPClient whose socket goes to addresses checked beforehand, never to a new lookup."""

    def __init__(self, host: str, *, addresses: list[tuple[int, IpAddress]], **kwargs: object) -> None:
        self._addresses = addresses
        super().__init__(host, **kwargs)  # type: ignore[arg-type]

    def _create_IMAP4(self) -> imap4.IMAP4WithTimeout | tls.IMAP4_TLS:
        connect_timeout = getattr(self._timeout, "connect", None)
        if self.ssl:
            return _PinnedTls(self.host, self.port, self.ssl_context, connect_timeout, self._addresses)
        return _PinnedPlain(self.host, self.port, connect_timeout, self._addresses)


def imap_client(
    host: str,
    *,
    port: int,
    use_tls: bool,
    ssl_context: ssl.SSLContext,
    timeout_s: float,
    policy: DestinationPolicy,
) -> IMAPClient:
    """Check the destination, then connect to the checked address (raises as resolve_checked does)."""
    addresses = resolve_checked(host, port, policy)
    return PinnedIMAPClient(
        normalize_host(host),
        addresses=addresses,
        port=port,
        ssl=use_tls,
        ssl_context=ssl_context,
        timeout=timeout_s,
    )
