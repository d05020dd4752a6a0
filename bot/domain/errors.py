"""The one error base of the domain. Its message is what the user reads (ephemeral reply)."""

from bot.domain.text import strip_controls


class DomainError(Exception):
    """A command that cannot be carried out; `str(error)` explains why and how to do it right.

    The message often quotes what was typed; control characters are taken out of it, so
    that what the user reads (a reply, or an error under a form field) has none."""

    def __init__(self, message: str = "", *args: object) -> None:
        super().__init__(strip_controls(message), *args)


class NotFound(DomainError):
    """The incident (or the channel's incident) does not exist."""


class InvalidCommand(DomainError):
    """Wrong words: unknown severity, empty title, unknown subcommand, bad duration."""


class IllegalTransition(DomainError):
    """The incident's state does not allow this (e.g. resolving a resolved incident)."""


class NothingToDo(DomainError):
    """Already done (a second click, a repeated command); nothing changes."""


class NotAllowed(DomainError):
    """The policy's `permissions` (or the workspace) do not let this person do this."""


class AlreadyDone(NothingToDo):
    """The same submission (a form's view id) arrived again; it was acted on the first time."""
