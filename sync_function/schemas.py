"""Request and response bodies of the HTTP API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    WithJsonSchema,
    field_validator,
)

from sync_function.destinations import InvalidHost, normalize_host


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


class NewEmailAccount(Strict):
    # The pattern publishes the characters refused below (controls, whitespace, '/', '@'); the rest of
    # what makes a host name (labels, IDNA) is checked by sync_function.destinations.
    host: str = Field(min_length=1, max_length=253, json_schema_extra={"pattern": HOST_CHARACTERS})
    port: JsonInt = Field(ge=1, le=65535)
    tls_mode: Literal["tls", "starttls", "plain"]
    # The published pattern says what _no_control_characters enforces (ECMA-262 syntax, for clients).
    username: str = Field(min_length=1, max_length=320, json_schema_extra={"pattern": NO_CONTROL_CHARACTERS})
    password: str = Field(min_length=1, max_length=1024, json_schema_extra={"pattern": NO_CONTROL_CHARACTERS})
    mailbox: str = Field(
        default="INBOX", min_length=1, max_length=512, json_schema_extra={"pattern": NO_CONTROL_CHARACTERS}
    )

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
    def _no_control_characters(cls, value: str) -> str:
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValueError("must not contain control characters")
        return value


class EmailAccount(BaseModel):
    id: uuid.UUID
    host: str
    port: int
    tls_mode: str
    username: str
    mailbox: str
    created_at: datetime


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


class History(Success):
    runs: list[Run]


class ErrorBody(BaseModel):
    success: Literal[False] = False
    error: str
