from fastapi import APIRouter, status

from master_server.auth import service as auth_service
from master_server.auth.dependencies import CurrentUser
from master_server.auth.errors import (
    InvalidCredentials,
    InvalidOtp,
    InvalidToken,
    OtpNotStarted,
    OtpRequired,
)
from master_server.auth.schemas import (
    LoginRequest,
    LoginResponse,
    OtpSetupResponse,
    OtpVerifyRequest,
)
from master_server.core.deps import DbSession, HashingDep, SettingsDep
from master_server.core.errors import (
    VALIDATION_RESPONSES,
    DatabaseBusy,
    DatabaseUnavailable,
    ErrorBody,
    error_responses,
)
from master_server.users.schemas import UserRead

router = APIRouter(
    prefix="/auth",
    tags=["auth"],
    responses={
        **error_responses(DatabaseUnavailable, DatabaseBusy),
        **VALIDATION_RESPONSES,
    },
)


@router.post(
    "/login",
    responses={
        401: {
            "model": ErrorBody,
            "description": f"{InvalidCredentials.message}; {OtpRequired.message} "
            f"(body has otp_required: true); {InvalidOtp.message}",
        }
    },
)
async def login(
    body: LoginRequest, db: DbSession, hashing: HashingDep, settings: SettingsDep
) -> LoginResponse:
    """Exchange a username, password and (when enabled) TOTP code for a session."""
    opened = await auth_service.login(
        db,
        hashing,
        username=body.username,
        password=body.password,
        otp=body.otp,
        ttl_seconds=settings.session_ttl,
    )
    return LoginResponse(
        token=opened.token,
        expires_at=opened.expires_at,
        user=UserRead.of(opened.user),
    )


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(InvalidToken),
)
async def logout(authenticated: CurrentUser, db: DbSession) -> None:
    """End this session; its token stops working at once."""
    await auth_service.logout(db, authenticated.session_id)


@router.get("/me", responses=error_responses(InvalidToken))
async def me(authenticated: CurrentUser) -> UserRead:
    """The logged-in user."""
    return UserRead.of(authenticated.user)


@router.post("/otp/setup", responses=error_responses(InvalidToken))
async def otp_setup(
    authenticated: CurrentUser, db: DbSession, settings: SettingsDep
) -> OtpSetupResponse:
    """Start TOTP enrolment: a new secret, not enforced until a code verifies it."""
    secret, uri = await auth_service.start_otp_setup(
        db, authenticated.user, issuer=settings.otp_issuer
    )
    return OtpSetupResponse(secret=secret, otpauth_uri=uri)


@router.post(
    "/otp/verify", responses=error_responses(InvalidToken, InvalidOtp, OtpNotStarted)
)
async def otp_verify(
    body: OtpVerifyRequest, authenticated: CurrentUser, db: DbSession
) -> UserRead:
    """Turn TOTP on with a current code from the secret given by setup."""
    user = await auth_service.verify_otp(db, authenticated.user, body.code)
    return UserRead.of(user)
