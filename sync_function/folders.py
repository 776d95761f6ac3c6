"""Which folders of an account an import reads: a chosen list, or every selectable one."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sync_function.imap import Folder

# Left out of "all folders" unless the account asks for them: spam and deleted mail.
DEFAULT_SKIP_SPECIAL_USE: tuple[str, ...] = ("\\Junk", "\\Trash")
# RFC 6154 special uses a user may choose to leave out.
SPECIAL_USES: tuple[str, ...] = ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash")
# LIST attributes of names that are not folders one can open (RFC 3501, RFC 5258).
_NOT_SELECTABLE = frozenset({"\\NOSELECT", "\\NONEXISTENT"})


def selectable(listed: Iterable[Folder], *, skip_special_use: Sequence[str]) -> list[str]:
    """Names of the listed folders that can be opened and whose special use is not skipped.

    INBOX first, then by name, so that runs read folders in a stable order.
    """
    skipped = {use.upper() for use in skip_special_use}
    names = [
        folder.name
        for folder in listed
        if not {a.upper() for a in folder.attributes} & (_NOT_SELECTABLE | skipped)
    ]
    return sorted(set(names), key=lambda name: (name.upper() != "INBOX", name))
