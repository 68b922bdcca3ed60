"""Breaker (policy): per-provider circuit state (closed/slowed/open/probing), trip and resume
rules loaded from data, decisions only: the actuators in :mod:`mailwarden.postfix` enforce them."""
