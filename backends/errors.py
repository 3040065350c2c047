"""Errors a person can cause and fix.

The CLI prints ``str(error)`` as the only line on stderr, so each message is one sentence that
names the file, key or host at fault and says what to do about it.
"""


class AupError(Exception):
    """Base of every error caused by input a person controls (files, keys, hosts, forms)."""


class ConfigError(AupError):
    """A mistake in experiment.json, env.ini or a host specification."""
