from master_server.core.errors import Conflict, NotFound


class UserNotFound(NotFound):
    code = "user_not_found"
    message = "user not found"


class UsernameTaken(Conflict):
    code = "username_taken"
    message = "a user with this username already exists"


class LastAdmin(Conflict):
    code = "last_admin"
    message = "the last enabled admin cannot be deleted, disabled or demoted"
