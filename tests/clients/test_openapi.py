"""The OpenAPI schema describes the clients, registration and commands API."""

import pytest
from fastapi import FastAPI

OPERATIONS = {
    ("post", "/clients/register"): ("RegistrationRequest", "201", {"401", "422"}),
    ("post", "/clients"): ("ClientCreate", "201", {"401", "403", "422"}),
    ("get", "/clients"): (None, "200", {"401", "422"}),
    ("get", "/clients/{client_id}"): (None, "200", {"401", "404", "422"}),
    ("delete", "/clients/{client_id}"): (None, "204", {"401", "403", "404"}),
    ("patch", "/clients/{client_id}/network"): (
        "NetworkUpdate",
        "200",
        {"401", "403", "404", "422"},
    ),
    ("post", "/clients/{client_id}/assign"): (
        "AssignmentCreate",
        "204",
        {"401", "403", "404", "422"},
    ),
    ("delete", "/clients/{client_id}/assign/{user_id}"): (
        None,
        "204",
        {"401", "403", "404"},
    ),
    ("post", "/clients/{client_id}/provision-key"): (
        None,
        "200",
        {"401", "403", "404"},
    ),
    ("post", "/clients/{client_id}/commands"): (
        "CommandCreate",
        "201",
        {"401", "404", "422"},
    ),
    ("get", "/clients/{client_id}/commands"): (None, "200", {"401", "404", "422"}),
    ("post", "/clients/{client_id}/commands/{command_id}/ack"): (
        "CommandAck",
        "200",
        {"401", "404", "409", "422"},
    ),
}


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_openapi_describes_each_endpoint_with_its_models_and_errors(
    app: FastAPI, method: str, path: str
) -> None:
    request_model, success, errors = OPERATIONS[(method, path)]
    operation = app.openapi()["paths"][path][method]

    assert operation.get("description"), "the endpoint needs a docstring"
    if request_model is not None:
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        assert schema["$ref"].endswith(f"/{request_model}")
    assert success in operation["responses"]
    if success != "204":
        assert operation["responses"][success]["content"]["application/json"]
    for status in errors:
        content = operation["responses"][status]["content"]["application/json"]
        expected = "ValidationErrorBody" if status == "422" else "ErrorBody"
        assert content["schema"]["$ref"].endswith(f"/{expected}")


def test_openapi_shows_admins_and_users_their_own_client_shapes(
    app: FastAPI,
) -> None:
    schemas = app.openapi()["components"]["schemas"]

    assert "assigned_user_ids" in schemas["ClientAdminRead"]["properties"]
    assert "assigned_user_ids" not in schemas["ClientRead"]["properties"]
    assert "provision_key" in schemas["ClientCreated"]["properties"]
    for name in ("ClientRead", "ClientAdminRead", "CommandRead"):
        assert not any("hash" in field for field in schemas[name]["properties"])
