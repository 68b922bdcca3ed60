"""Classify: SMTP replies -> reason/scope/issuer/URL, relay hosts and domains -> providers.

All knowledge is data (``mailwarden/data/reasons.toml``, ``data/providers/*.toml``, ...); this
package only compiles and applies it."""
