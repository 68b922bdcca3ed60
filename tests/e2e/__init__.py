"""End-to-end tests: real Postfix, DNS and receivers (see scenario.py)."""
