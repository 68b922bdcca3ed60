"""Forensics: parse Received headers (RFC 5321 first, MTA variants second) and decide whether a
message left through our MTA or directly from another program on our IP."""
