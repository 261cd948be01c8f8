"""``POST /auth/token`` (SMART Backend Services, RFC 6749 §4.4 with RFC 7523 client assertions),
``GET /auth/jwks`` and ``GET /.well-known/smart-configuration`` (SMART App Launch 2.0 §Conformance)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import Connection
from starlette.concurrency import run_in_threadpool

from fhir_server.auth.assertion import (
    ASSERTION_ALGORITHMS,
    ASSERTION_TYPE,
    OAuthError,
    authenticate_assertion,
    authenticate_secret,
    basic_credentials,
    invalid_client,
)
from fhir_server.auth.authority import DISABLED_WARNING, Authority
from fhir_server.auth.clients import Client
from fhir_server.auth.scopes import ScopeError, granted_scopes, split_scopes

if TYPE_CHECKING:
    from fhir_server.api.app import Context

FORM = "application/x-www-form-urlencoded"
_MAX_FORM = 64 * 1024
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
SMART_SERVICE = "http://terminology.hl7.org/CodeSystem/restful-security-service"
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
SCOPES_SUPPORTED = [
    "system/*.cruds",
    "system/*.rs",
    "system/*.read",
    "system/*.write",
    "system/*.*",
    "user/*.rs",
    "patient/*.rs",
    "patient/*.read",
]
"""``patient/`` scopes only for clients registered for one resident (``hie auth client create --patient``)."""


def oauth_error(error: OAuthError) -> Response:
    headers = dict(_NO_STORE)
    if error.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="hie"' if error.basic else 'Bearer realm="hie"'
    body = {"error": error.error, "error_description": error.description}
    return JSONResponse(body, status_code=error.status, headers=headers)


def _form(raw: bytes) -> dict[str, str]:
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(raw))
    except (UnicodeDecodeError, ValueError):
        raise OAuthError("invalid_request", "The body must be application/x-www-form-urlencoded.") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise OAuthError("invalid_request", f"The parameter {name} is repeated (RFC 6749 §3.2).")
        form[name] = value
    return form


def authenticate_and_grant(
    conn: Connection, authority: Authority, form: dict[str, str], authorization: str | None, token_url: str
) -> tuple[Client, list[str]]:
    """The client the request proves to be and the scopes it is granted."""
    assertion_type = form.get("client_assertion_type")
    if assertion_type is not None or "client_assertion" in form:
        if assertion_type != ASSERTION_TYPE:
            raise invalid_client(f"client_assertion_type must be {ASSERTION_TYPE}.")
        if authorization:
            raise OAuthError("invalid_request", "Use one client authentication method, not two (RFC 6749 §2.3).")
        client = authenticate_assertion(
            conn, form.get("client_assertion", ""), token_url=token_url, jwks_urls=authority.jwks_urls
        )
    elif authorization and authorization.lower().startswith("basic "):
        client_id, secret = basic_credentials(authorization)
        client = authenticate_secret(conn, client_id, secret)
    else:
        raise invalid_client("No client authentication: send a client_assertion (private_key_jwt) or Basic auth.")
    try:
        scopes = granted_scopes(
            split_scopes(form.get("scope")), list(client.scopes), patient_context=client.patient is not None
        )
    except ScopeError as error:
        raise OAuthError("invalid_scope", str(error)) from None
    if not scopes:
        raise OAuthError(
            "invalid_scope", f"None of the requested scopes is registered for this client ({' '.join(client.scopes)})."
        )
    return client, scopes


def smart_configuration(authority: Authority, request: Request) -> dict[str, Any]:
    base = authority.token_url(request).removesuffix("/token")
    return {
        "issuer": authority.settings.auth_issuer or base,
        "jwks_uri": f"{base}/jwks",
        "token_endpoint": authority.token_url(request),
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic"],
        "token_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGORITHMS,
        "grant_types_supported": ["client_credentials"],
        "scopes_supported": SCOPES_SUPPORTED,
        "response_types_supported": ["token"],
        "capabilities": [
            "client-confidential-asymmetric",
            "client-confidential-symmetric",
            "permission-v1",
            "permission-v2",
        ],
    }


def security_section(authority: Authority, request: Request) -> dict[str, Any]:
    """CapabilityStatement.rest.security (SMART App Launch 2.0 §Declaring support in a CapabilityStatement)."""
    if authority.disabled:
        description = DISABLED_WARNING
    else:
        description = (
            "SMART Backend Services: an OAuth 2.0 client_credentials token from the token endpoint "
            "(private_key_jwt with RS384 or ES384, or client_secret_basic for development), sent as "
            "'Authorization: Bearer'. SMART v1 and v2 system scopes are enforced on every interaction."
        )
        if authority.settings.auth_jwks_url:
            description += f" Tokens of the identity provider {authority.settings.auth_issuer} are accepted too."
    return {
        "cors": True,
        "service": [
            {
                "coding": [{"system": SMART_SERVICE, "code": "SMART-on-FHIR"}],
                "text": "OAuth2 using SMART-on-FHIR profile (see http://docs.smarthealthit.org)",
            }
        ],
        "extension": [{"url": OAUTH_URIS, "extension": [{"url": "token", "valueUri": authority.token_url(request)}]}],
        "description": description,
    }


def declare_security(capability: dict[str, Any], request: Request) -> None:
    """Add ``rest.security`` to a CapabilityStatement (and the loud warning when authentication is off)."""
    authority: Authority | None = getattr(request.app.state, "authority", None)
    if authority is None:
        return
    for rest in capability.get("rest", []):
        rest["security"] = security_section(authority, request)
    if authority.disabled:
        capability["description"] = DISABLED_WARNING


def router(ctx: Context, authority: Authority) -> APIRouter:
    api = APIRouter()

    @api.post("/auth/token", include_in_schema=False)
    async def token(request: Request) -> Response:
        try:
            if request.headers.get("content-type", "").split(";")[0].strip().lower() != FORM:
                raise OAuthError("invalid_request", f"The token request body must be {FORM}.")
            raw = await request.body()
            if len(raw) > _MAX_FORM:
                raise OAuthError("invalid_request", "The token request is too large.")
            form = _form(raw)
            grant_type = form.get("grant_type")
            if grant_type != "client_credentials":
                raise OAuthError(
                    "unsupported_grant_type" if grant_type else "invalid_request",
                    f"grant_type must be client_credentials, not {grant_type!r}.",
                )
            authorization = request.headers.get("authorization")
            token_url = authority.token_url(request)

            client, scopes = await ctx.run(
                lambda conn: authenticate_and_grant(conn, authority, form, authorization, token_url)
            )
        except OAuthError as error:
            return oauth_error(error)
        lifetime = authority.settings.auth_token_lifetime_seconds
        access_token = await run_in_threadpool(authority.issue, client, scopes, lifetime)  # may create the key
        body = {
            "access_token": access_token,
            "token_type": "bearer",
            "expires_in": lifetime,
            "scope": " ".join(scopes),
        }
        if client.patient:
            body["patient"] = client.patient.removeprefix("Patient/")  # SMART App Launch §Launch context
        return JSONResponse(body, headers=_NO_STORE)

    @api.get("/auth/jwks", include_in_schema=False)
    async def jwks() -> Response:
        keys = await run_in_threadpool(authority.keys.public_jwks)
        return JSONResponse({"keys": keys})

    @api.get("/.well-known/smart-configuration", include_in_schema=False)
    async def configuration(request: Request) -> Response:
        return JSONResponse(smart_configuration(authority, request))

    return api


__all__ = ["declare_security", "router", "security_section", "smart_configuration"]
