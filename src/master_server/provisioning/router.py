from fastapi import APIRouter, status

from master_server.core.deps import DbSession
from master_server.core.errors import VALIDATION_RESPONSES, error_responses
from master_server.provisioning import service as provisioning_service
from master_server.provisioning.errors import InvalidProvisionKey
from master_server.provisioning.schemas import (
    RegistrationRequest,
    RegistrationResponse,
)

router = APIRouter(prefix="/clients", tags=["registration"])


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    responses={
        **error_responses(InvalidProvisionKey),
        **VALIDATION_RESPONSES,
    },
)
async def register_client(
    body: RegistrationRequest, db: DbSession
) -> RegistrationResponse:
    """Trade a one-time provision key for a client token (public; uses up the key)."""
    network = body.model_dump(include=body.model_fields_set - {"provision_key"})
    registration = await provisioning_service.register(
        db, provision_key=body.provision_key, network=network
    )
    return RegistrationResponse(
        client_id=registration.client_id, token=registration.token
    )
