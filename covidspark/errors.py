"""The errors a user can fix: what the ``covidspark`` command reports without a traceback.

Everything else that escapes a workflow is a bug in covidspark or in a library
under it, and the command shows its traceback and exits 1, unless it was raised
while Ctrl-C was being handled (:func:`raised_by_interrupt`).
"""


class UserError(Exception):
    """A problem the user fixes: bad input or a missing resource; the message says which and how.

    The command line prints :meth:`command_line_message` and exits with status 2.
    """

    def command_line_message(self):
        """The message in a command-line user's words (flags, not Python arguments)."""
        return str(self)


class InputError(UserError, ValueError):
    """Bad input: a named file, row, flag, parameter or URI, and why.

    A ``ValueError`` too, so code written against earlier versions that caught
    ``ValueError`` keeps working.
    """


class InputNotFoundError(InputError, FileNotFoundError):
    """A file or folder the user named does not exist."""


def raised_by_interrupt(exc):
    """True when ``exc`` was raised while a ``KeyboardInterrupt`` was being handled.

    Ctrl-C in the middle of a py4j call reaches py4j, which handles the
    ``KeyboardInterrupt`` by cancelling the call, and that can fail in turn
    (``Py4JError: Gateway must be connected to send cancel cmd.``): the error
    that escapes is py4j's, with the interrupt as its context.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False
