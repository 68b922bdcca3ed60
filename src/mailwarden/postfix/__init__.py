"""Postfix actuator: validated maps, the socketmap transport lookup server, postconf/postsuper
calls, setup/teardown of the main.cf/master.cf changes."""
