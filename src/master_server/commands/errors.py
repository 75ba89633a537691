from master_server.core.errors import Conflict, NotFound


class CommandNotFound(NotFound):
    """Also the answer for another client's command."""

    code = "command_not_found"
    message = "command not found"


class CommandNotSent(Conflict):
    """An ack for a command that no poll has handed out: it cannot have run."""

    code = "command_not_sent"
    message = "command has not been delivered to the client yet"


class CommandAlreadyAcknowledged(Conflict):
    """An ack whose status differs from the one the command already ended with."""

    code = "command_already_acknowledged"
    message = "command was already acknowledged with another status"
