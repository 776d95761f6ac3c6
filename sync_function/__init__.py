"""autosync sync function: HTTP API, queue worker and IMAP import."""
