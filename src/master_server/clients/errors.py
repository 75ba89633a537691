from master_server.core.errors import Forbidden, NotFound


class ClientNotFound(NotFound):
    """Also the answer for a client that exists but is not the caller's to see."""

    code = "client_not_found"
    message = "client not found"


class AssignmentNotFound(NotFound):
    code = "assignment_not_found"
    message = "this user is not assigned to this client"


class AdminRequired(Forbidden):
    """A user who may see the client, asking for what only an admin may do."""

    code = "forbidden"
    message = "this needs an admin"


class NetworkChangeForbidden(Forbidden):
    code = "forbidden"
    message = "only an admin or the client itself may change its network"
