"""Pulumi components of the autosync stack, one module per component (see infra/README.md)."""
