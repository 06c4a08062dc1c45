"""The `fedkube` command."""
