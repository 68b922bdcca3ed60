"""mailwarden: watch, explain and protect outbound mail on a self-hosted Postfix.

Stages (one package each, data flows one way): ``sources`` -> ``classify`` -> ``store`` ->
``breaker`` (policy) -> ``postfix``/``egress`` (actuators) -> ``report``/``web`` (views).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
