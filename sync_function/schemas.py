"""Request and response bodies of the HTTP API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator

from sync_function.destinations import InvalidHost, normalize_host


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SaveAutoSync(Strict):
    enabled: StrictBool
    # The range is Postgres's integer; which values are supported is decided in SQL, in one place.
    interval_minutes: StrictInt | None = Field(
        default=None,
        ge=-(2**31),
        le=2**31 - 1,
        description="One of auto_sync_supported_intervals(): 5, 6, 10, 12, 15, 20, 30, 60, 120, 180, 240, "
        "360, 480, 720 or 1440. Left out: the stored interval is kept (60 when none is stored).",
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
    host: str = Field(min_length=1, max_length=253)
    port: StrictInt = Field(ge=1, le=65535)
    tls_mode: Literal["tls", "starttls", "plain"]
    username: str = Field(min_length=1, max_length=320)
    password: str = Field(min_length=1, max_length=1024)
    mailbox: str = Field(default="INBOX", min_length=1, max_length=512)

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
