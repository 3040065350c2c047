"""Errors a person can cause and fix.

The CLI prints ``str(error)`` as the only line on stderr, so each message is one sentence that
names the file, key or host at fault and says what to do about it.

Some are also the built-in type Auptimizer raises in the same place, so that code written
against Auptimizer (`except KeyError`, `except EnvironmentError`) still catches them.
"""

from __future__ import annotations


class AupError(Exception):
    """Base of every error caused by input a person controls (files, keys, hosts, forms)."""


class ConfigError(AupError):
    """A mistake in experiment.json, env.ini or a host specification."""


class UnknownResourceError(ConfigError, KeyError):
    """A resource type no manager runs; a KeyError too, as Auptimizer's `get_resource_manager` raises."""

    def __str__(self) -> str:  # KeyError's str() would quote the message
        return str(self.args[0]) if self.args else ""


class UnknownArgumentError(ConfigError, TypeError):
    """A keyword argument no resource manager knows (a TypeError too, as Python raises for one)."""


class JobError(AupError, OSError):
    """A job cannot start or its output breaks the protocol (the message says which and why).

    An OSError too (Auptimizer's `Job.verify_local` raises EnvironmentError), so its message is
    the one argument it was given.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


__all__ = ["AupError", "ConfigError", "JobError", "UnknownArgumentError", "UnknownResourceError"]
