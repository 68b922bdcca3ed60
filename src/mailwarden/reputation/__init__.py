"""Reputation: PTR/FCrDNS/HELO, DNS blocklists, SPF/DKIM/DMARC, open-relay test and the Postfix
configuration audit behind ``mailwarden doctor``."""
