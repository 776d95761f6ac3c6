"""The database password as a Pulumi dynamic resource: a changed password is rotated, not just redeployed.

create checks that the password logs in (a data volume initialised earlier keeps its own); update
logs in with the current password, kept in this resource's (secret) state, and sets the new one with
ALTER ROLE (`infra.dbpassword`). Everything after it (migrations, settings, the function) uses its
`url` output, so nothing connects with a password the server does not have yet.

The user and the database are fixed when the volume is initialised: `check` refuses a change of
either, so `pulumi preview` already says so instead of `up` failing halfway.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi.dynamic

_LOGIN_KEYS = ("host", "port", "user", "database")
_FIXED_AT_INIT = ("user", "database")


def _login(props: dict[str, Any]):  # type: ignore[no-untyped-def]
    from infra import dbpassword

    return dbpassword.Login(
        host=str(props["host"]),
        port=int(props["port"]),
        user=str(props["user"]),
        database=str(props["database"]),
    )


def _outs(props: dict[str, Any]) -> dict[str, Any]:
    login = _login(props)
    return {
        "host": login.host,
        "port": login.port,
        "user": login.user,
        "database": login.database,
        "password": props["password"],
        "url": login.url(props["password"]),
    }


class DatabasePasswordProvider(pulumi.dynamic.ResourceProvider):
    """Checks the password on create; rotates it with ALTER ROLE on update; delete leaves the role alone."""

    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.CheckResult:
        failures = []
        for key in _FIXED_AT_INIT:
            if key in olds and olds[key] != news.get(key):
                failures.append(
                    pulumi.dynamic.CheckFailure(
                        key,
                        f"cannot change from {olds[key]!r} to {news.get(key)!r}: the data volume keeps the "
                        "user and database it was initialised with. Keep the old value, or destroy the stack "
                        "(and its data) first.",
                    )
                )
        return pulumi.dynamic.CheckResult(news, failures)

    def create(self, props: dict[str, Any]) -> pulumi.dynamic.CreateResult:
        from infra import dbpassword

        dbpassword.check(_login(props), props["password"])
        return pulumi.dynamic.CreateResult(id_=f"password-{secrets.token_hex(8)}", outs=_outs(props))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.DiffResult:
        # During a preview an input may be unknown (a password being generated): that differs too.
        changed = [key for key in (*_LOGIN_KEYS, "password") if olds.get(key) != news.get(key)]
        return pulumi.dynamic.DiffResult(changes=bool(changed), replaces=[], delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.UpdateResult:
        from infra import dbpassword

        login = _login(news)
        if olds.get("password") == news["password"]:
            dbpassword.check(login, news["password"])  # only the address changed (a new port)
        else:
            dbpassword.rotate(login, current=olds["password"], new=news["password"])
        return pulumi.dynamic.UpdateResult(outs=_outs(news))

    def read(self, id_: str, props: dict[str, Any]) -> pulumi.dynamic.ReadResult:
        # `pulumi refresh`: nothing to read back (Postgres does not reveal passwords); keep the state.
        return pulumi.dynamic.ReadResult(id_=id_, outs=props)

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        # The role goes with the container's data volume; a role is never dropped from here.
        return None


@dataclass
class DatabasePasswordArgs:
    """Arguments of `DatabasePassword`: where the server listens, its login role, and the password."""

    host: str
    port: int
    user: str
    database: str
    password: pulumi.Input[str]


class DatabasePassword(pulumi.dynamic.Resource, module="autosync", name="DatabasePassword"):
    """The login role's password, as the running server has it; `url` is the database URL with it."""

    url: pulumi.Output[str]

    def __init__(
        self, name: str, args: DatabasePasswordArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        props = {
            "host": args.host,
            "port": args.port,
            "user": args.user,
            "database": args.database,
            "password": pulumi.Output.secret(args.password),
            "url": None,
        }
        super().__init__(
            DatabasePasswordProvider(),
            name,
            props,
            pulumi.ResourceOptions.merge(
                opts, pulumi.ResourceOptions(additional_secret_outputs=["password", "url"])
            ),
        )
