"""OAuth2 accounts: sign in with XOAUTH2 / OAUTHBEARER and a refresh token instead of a password

An account is either a password account (as before) or an OAuth2 account: its provider's token
endpoint and scopes, the product's client id (and, for confidential clients, the secret), and the
user's refresh token; secrets are encrypted by the service like passwords and never granted to
users. `needs_reconnect_since` is set when the provider refuses the grant (consent revoked,
password changed) and cleared when the account is reconnected or imports again.

Revision ID: 0019
Revises: 0018
"""

from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

ADD_COLUMNS = """
ALTER TABLE public.email_accounts
    ALTER COLUMN password_encrypted DROP NOT NULL,
    ADD COLUMN auth_method text NOT NULL DEFAULT 'password'
        CONSTRAINT email_accounts_auth_method CHECK (auth_method IN ('password', 'oauth2')),
    ADD COLUMN oauth_provider text,
    ADD COLUMN oauth_token_endpoint text,
    ADD COLUMN oauth_scopes text[],
    ADD COLUMN oauth_client_id text,
    ADD COLUMN oauth_client_secret_encrypted bytea,
    ADD COLUMN oauth_refresh_token_encrypted bytea,
    ADD COLUMN oauth_mechanism text
        CONSTRAINT email_accounts_oauth_mechanism CHECK (oauth_mechanism IN ('XOAUTH2', 'OAUTHBEARER')),
    ADD COLUMN needs_reconnect_since timestamptz,
    ADD COLUMN needs_reconnect_reason text,
    ADD CONSTRAINT email_accounts_credentials CHECK (
        (auth_method = 'password' AND password_encrypted IS NOT NULL AND oauth_refresh_token_encrypted IS NULL)
        OR (auth_method = 'oauth2' AND password_encrypted IS NULL AND oauth_refresh_token_encrypted IS NOT NULL
            AND oauth_token_endpoint IS NOT NULL AND oauth_client_id IS NOT NULL AND oauth_mechanism IS NOT NULL)
    )
"""

GRANT_AUTHENTICATED = """
GRANT SELECT (auth_method, oauth_provider, oauth_token_endpoint, oauth_scopes, oauth_client_id, oauth_mechanism,
              needs_reconnect_since, needs_reconnect_reason)
    ON public.email_accounts TO authenticated
"""

REVOKE_AUTHENTICATED = """
REVOKE SELECT (auth_method, oauth_provider, oauth_token_endpoint, oauth_scopes, oauth_client_id, oauth_mechanism,
               needs_reconnect_since, needs_reconnect_reason)
    ON public.email_accounts FROM authenticated
"""

# OAuth2 accounts cannot exist without these columns: they go first.
DELETE_OAUTH_ACCOUNTS = "DELETE FROM public.email_accounts WHERE auth_method = 'oauth2'"

DROP_COLUMNS = """
ALTER TABLE public.email_accounts
    DROP CONSTRAINT email_accounts_credentials,
    DROP COLUMN needs_reconnect_reason,
    DROP COLUMN needs_reconnect_since,
    DROP COLUMN oauth_mechanism,
    DROP COLUMN oauth_refresh_token_encrypted,
    DROP COLUMN oauth_client_secret_encrypted,
    DROP COLUMN oauth_client_id,
    DROP COLUMN oauth_scopes,
    DROP COLUMN oauth_token_endpoint,
    DROP COLUMN oauth_provider,
    DROP COLUMN auth_method,
    ALTER COLUMN password_encrypted SET NOT NULL
"""


def upgrade() -> None:
    op.execute(ADD_COLUMNS)
    op.execute(GRANT_AUTHENTICATED)


def downgrade() -> None:
    op.execute(REVOKE_AUTHENTICATED)
    op.execute(DELETE_OAUTH_ACCOUNTS)
    op.execute(DROP_COLUMNS)
