from master_server.core.errors import NotFound


class ClientNotFound(NotFound):
    """Also the answer for a client that exists but is not the caller's to see."""

    code = "client_not_found"
    message = "client not found"
