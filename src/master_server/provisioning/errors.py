from master_server.core.errors import NotAuthenticated


class InvalidProvisionKey(NotAuthenticated):
    """An unknown key, or one that a registration has already used."""

    code = "invalid_provision_key"
    message = "invalid provision key"
