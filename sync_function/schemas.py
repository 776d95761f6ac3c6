"""Request and response bodies of the HTTP API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal, cast

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from sync_function.certs import MAX_CA_PEM_CHARS, validate_ca_pem
from sync_function.destinations import InvalidHost, normalize_host
from sync_function.folders import DEFAULT_SKIP_SPECIAL_USE, SPECIAL_USES

SpecialUse = Literal["\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# What auto_sync_supported_intervals() returns (revision 0003), published as the field's enum so that
# clients see what the server accepts. SQL still decides (its error lists them); a test checks that
# this list and the database's agree.
SUPPORTED_INTERVALS = (5, 6, 10, 12, 15, 20, 30, 60, 120, 180, 240, 360, 480, 720, 1440)
_INTERVAL_DOC = (
    f"One of auto_sync_supported_intervals(): {', '.join(map(str, SUPPORTED_INTERVALS))}. Left out: the "
    "stored interval is kept (60 when none is stored)."
)


def _integral(value: object) -> object:
    # JSON has one number type: 30.0 is the integer 30 to JSON Schema (and to JavaScript clients).
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# An integer as JSON Schema means it: whole numbers, also written 30.0; never strings or booleans.
JsonInt = Annotated[StrictInt, BeforeValidator(_integral)]

HOST_CHARACTERS = (
    "^[^/@\\u0000-\\u0020\\u007f\\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]+$"
)
NO_CONTROL_CHARACTERS = "^[^\\u0000-\\u001f\\u007f]*$"


class SaveAutoSync(Strict):
    enabled: StrictBool
    # The range is Postgres's integer; which values are supported is decided in SQL, in one place.
    interval_minutes: Annotated[
        JsonInt | None,
        WithJsonSchema({"type": "integer", "enum": list(SUPPORTED_INTERVALS), "description": _INTERVAL_DOC}),
    ] = Field(
        default=None,
        # Left out means "keep": the document publishes no default (null is not an accepted value).
        json_schema_extra=lambda schema: schema.pop("default", None),  # type: ignore[arg-type,misc]
        ge=-(2**31),
        le=2**31 - 1,
    )

    @field_validator("interval_minutes", mode="before")
    @classmethod
    def _absent_not_null(cls, value: object) -> object:
        # Leaving the field out keeps the stored interval; an explicit null is a client bug.
        if value is None:
            raise ValueError("must be an integer (leave it out to keep the stored interval)")
        return value


class AutoSyncPreference(BaseModel):
    enabled: bool
    interval_minutes: int


class Success(BaseModel):
    success: Literal[True] = True


class LoadAutoSync(Success):
    # The published field name; it holds the user's auto-sync preference.
    settings: AutoSyncPreference


def _exactly_one(*variants: tuple[list[str], list[str]]) -> dict[str, Any]:
    """JSON Schema for "exactly one of these groups": each variant's fields given (not null), the
    others' left out or null, as the validators below read a field that is null as left out."""
    everything = {name for given, _ in variants for name in given}
    return {
        "oneOf": [
            {
                "required": given,
                "properties": {
                    **{name: {"not": {"type": "null"}} for name in given},
                    **{name: {"type": "null"} for name in sorted(everything - set(excused) - set(given))},
                },
            }
            for given, excused in variants
        ]
    }


# The cross-field rules of the validators, stated in the published schema so that clients (and the
# fuzz test) see them: which fields go together is as much the API as each field's type.
GRANT = _exactly_one(
    (["refresh_token"], ["code_verifier", "redirect_uri"]), (["code", "code_verifier", "redirect_uri"], [])
)
ENDPOINT = _exactly_one((["provider"], []), (["token_endpoint"], []))
CREDENTIAL = _exactly_one((["password"], []), (["oauth2"], []))
ONE_FOLDER_CHOICE: dict[str, Any] = {
    "not": {
        "required": ["folders", "all_folders"],
        "properties": {"folders": {"type": "array"}, "all_folders": {"const": True}},
    }
}
# What oauth.provider() accepts from a client: https and a host (http on loopback only where the server
# allows it, for tests), ASCII, no brackets (urlsplit refuses unbalanced ones).
ENDPOINT_URL_PATTERN = "^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?([/?#][!-~]*)?$"


class OAuth2Sign(Strict):
    """How an OAuth2 account signs in: a preset provider or a token endpoint, the product's client,
    and either the user's refresh token or an authorization code (with its PKCE verifier) to exchange."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"allOf": [ENDPOINT, GRANT]})

    provider: Literal["google", "microsoft"] | None = Field(
        default=None, description="a preset (token endpoint and scopes); or give token_endpoint"
    )
    token_endpoint: str | None = Field(
        default=None,
        max_length=2048,
        description="any provider's token endpoint (https)",
        json_schema_extra={"pattern": ENDPOINT_URL_PATTERN},
    )
    scopes: list[Annotated[str, Field(min_length=1, max_length=512)]] | None = Field(
        default=None, max_length=20, description="scopes to ask for on refresh (default: the preset's)"
    )
    client_id: str = Field(min_length=1, max_length=512, description="the product's OAuth2 client id")
    client_secret: str | None = Field(
        default=None, min_length=1, max_length=1024, description="for confidential clients; stored encrypted"
    )
    mechanism: Literal["XOAUTH2", "OAUTHBEARER"] = "XOAUTH2"
    refresh_token: str | None = Field(default=None, min_length=1, max_length=4096)
    code: str | None = Field(default=None, min_length=1, max_length=4096)
    code_verifier: str | None = Field(default=None, min_length=43, max_length=128)
    redirect_uri: str | None = Field(default=None, min_length=1, max_length=2048)

    @model_validator(mode="after")
    def _one_grant(self) -> OAuth2Sign:
        if (self.provider is None) == (self.token_endpoint is None):
            raise ValueError("give either provider or token_endpoint")
        if (self.refresh_token is None) == (self.code is None):
            raise ValueError("give either refresh_token or code (with code_verifier and redirect_uri)")
        if self.code is not None and (self.code_verifier is None or self.redirect_uri is None):
            raise ValueError("an authorization code needs its code_verifier and redirect_uri")
        return self


class NextRun(Success):
    next_run: datetime | None = Field(
        description="when the user's auto-sync fires next (UTC); null while it is off"
    )


class Intervals(Success):
    intervals: list[int] = Field(description="auto_sync_supported_intervals(), in minutes, ascending")


class SyncQueued(Success):
    run_id: uuid.UUID


class NewEmailAccount(Strict):
    """A password account or an OAuth2 account (exactly one of `password`, `oauth2`)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={**CREDENTIAL, **ONE_FOLDER_CHOICE})

    # The pattern publishes the characters refused below (controls, whitespace, '/', '@'); the rest of
    # what makes a host name (labels, IDNA) is checked by sync_function.destinations.
    host: str = Field(min_length=1, max_length=253, json_schema_extra={"pattern": HOST_CHARACTERS})
    port: JsonInt = Field(ge=1, le=65535)
    tls_mode: Literal["tls", "starttls", "plain"]
    # The published pattern says what _no_control_characters enforces (ECMA-262 syntax, for clients).
    username: str = Field(min_length=1, max_length=320, json_schema_extra={"pattern": NO_CONTROL_CHARACTERS})
    password: str | None = Field(
        default=None, min_length=1, max_length=1024, json_schema_extra={"pattern": NO_CONTROL_CHARACTERS}
    )
    oauth2: OAuth2Sign | None = Field(default=None, description="sign in with OAuth2 instead of a password")
    mailbox: str = Field(
        default="INBOX", min_length=1, max_length=512, json_schema_extra={"pattern": NO_CONTROL_CHARACTERS}
    )
    ca_pem: str | None = Field(
        default=None,
        max_length=MAX_CA_PEM_CHARS,
        description="PEM certificate(s) of the private certificate authority that signs the server's "
        "certificate (or the server's self-signed certificate); host names are still checked",
    )

    folders: (
        list[
            Annotated[
                str, Field(min_length=1, max_length=512, json_schema_extra={"pattern": NO_CONTROL_CHARACTERS})
            ]
        ]
        | None
    ) = Field(
        default=None,
        min_length=1,
        max_length=1000,
        description="Folders to import, each with its own checkpoint (default: just `mailbox`)",
    )
    all_folders: StrictBool = Field(
        default=False,
        description="Import every selectable folder, found with LIST at each run (not with `folders`)",
    )
    skip_special_use: list[SpecialUse] = Field(
        default_factory=lambda: cast(list[SpecialUse], list(DEFAULT_SKIP_SPECIAL_USE)),
        max_length=len(SPECIAL_USES),
        description="With all_folders: special-use folders (RFC 6154) to leave out",
    )

    @field_validator("ca_pem")
    @classmethod
    def _ca_pem(cls, value: str | None) -> str | None:
        return None if value is None else validate_ca_pem(value)

    @field_validator("folders")
    @classmethod
    def _folders(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and any(ord(c) < 32 or ord(c) == 127 for name in value for c in name):
            raise ValueError("folder names must not contain control characters")
        return value

    @model_validator(mode="after")
    def _one_credential(self) -> NewEmailAccount:
        if (self.password is None) == (self.oauth2 is None):
            raise ValueError("give either password or oauth2")
        return self

    @model_validator(mode="after")
    def _one_folder_choice(self) -> NewEmailAccount:
        if self.all_folders and self.folders is not None:
            raise ValueError("give either folders or all_folders, not both")
        return self

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        value = value.strip()
        if not value or any(c.isspace() or c in "/@" for c in value):
            raise ValueError("must be a bare host name or address, e.g. imap.example.com")
        try:
            return normalize_host(value)  # stored as dialled: IDNA (ASCII) or a canonical address
        except InvalidHost as exc:
            raise ValueError(str(exc)) from None

    @field_validator("username", "password", "mailbox")
    @classmethod
    def _no_control_characters(cls, value: str | None) -> str | None:
        if value is not None and any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValueError("must not contain control characters")
        return value


class EmailAccount(BaseModel):
    id: uuid.UUID
    host: str
    port: int
    tls_mode: str
    username: str
    mailbox: str
    ca_pem: str | None = None
    folders: list[str] | None = None
    all_folders: bool = False
    skip_special_use: list[str] = Field(default_factory=list)
    auth_method: str = "password"
    oauth_provider: str | None = None
    oauth_mechanism: str | None = None
    needs_reconnect_since: datetime | None = Field(
        default=None, description="set when the provider refused the sign-in: reconnect the account"
    )
    needs_reconnect_reason: str | None = None
    created_at: datetime


class Reconnect(Strict):
    """A new grant for an OAuth2 account: a refresh token, or a code with its verifier and redirect URI."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=GRANT)

    refresh_token: str | None = Field(default=None, min_length=1, max_length=4096)
    code: str | None = Field(default=None, min_length=1, max_length=4096)
    code_verifier: str | None = Field(default=None, min_length=43, max_length=128)
    redirect_uri: str | None = Field(default=None, min_length=1, max_length=2048)

    @model_validator(mode="after")
    def _one_grant(self) -> Reconnect:
        if (self.refresh_token is None) == (self.code is None):
            raise ValueError("give either refresh_token or code (with code_verifier and redirect_uri)")
        if self.code is not None and (self.code_verifier is None or self.redirect_uri is None):
            raise ValueError("an authorization code needs its code_verifier and redirect_uri")
        return self


class EmailAccountCreated(Success):
    account: EmailAccount


class EmailAccountList(Success):
    accounts: list[EmailAccount]


class UserRef(Strict):
    user_id: uuid.UUID


class AutoSyncAccepted(Success):
    run_id: uuid.UUID
    queued: bool = Field(description="false when an import for this user was already queued or running")


class AutoSyncSkipped(Success):
    skipped: Literal[True] = True
    reason: str


class ServiceKeyStatus(Success):
    key: Literal["current", "previous"] = Field(
        description="which of the function's keys the caller presented: `previous` while a rotation is under way"
    )
    previous_configured: bool = Field(
        description="the function still accepts a previous key (AUTOSYNC_SERVICE_KEY_PREVIOUS)"
    )


class ImportCounts(Success):
    run_id: uuid.UUID
    accounts: int
    fetched: int
    imported: int
    skipped: int
    duplicates: int
    bytes: int
    seconds: float


class Run(BaseModel):
    id: uuid.UUID
    trigger: str
    status: str
    attempts: int
    messages_imported: int
    error: str | None
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress_done: int = Field(description="messages handled so far by the latest attempt (moves per batch)")
    progress_total: int | None = Field(
        description="messages that attempt has to handle, as far as known (null until the first mailbox "
        "was searched; grows as the user's next account is reached)"
    )


class History(Success):
    runs: list[Run]


class OperatorOverview(Success):
    """The operator view's rows; each list is newest (or largest) first."""

    enabled_by_interval: list[dict[str, Any]]
    failing_users: list[dict[str, Any]]
    queue: dict[str, int]
    failed_cron_runs: list[dict[str, Any]]
    lateness: list[dict[str, Any]]
    recent_runs: list[dict[str, Any]]


class ErrorBody(BaseModel):
    success: Literal[False] = False
    error: str
