"""Self-contained Python files the fast path runs on hosts over SSH (inkdeploy/remote.py)."""
