from master_server.core.errors import MasterServerError, NotAuthenticated


class InvalidCredentials(NotAuthenticated):
    code = "invalid_credentials"
    message = "invalid credentials"


class OtpRequired(NotAuthenticated):
    code = "otp_required"
    message = "a one-time code is required"

    def __init__(self) -> None:
        super().__init__(otp_required=True)


class InvalidOtp(NotAuthenticated):
    code = "invalid_otp"
    message = "invalid or already used one-time code"


class OtpNotStarted(MasterServerError):
    status_code = 409
    code = "otp_setup_required"
    message = "call /auth/otp/setup before verifying a code"


class InvalidToken(NotAuthenticated):
    code = "invalid_token"
    message = "invalid or expired token"


class WrongTokenKind(NotAuthenticated):
    code = "wrong_token_kind"
    message = "this endpoint needs a different kind of token"
