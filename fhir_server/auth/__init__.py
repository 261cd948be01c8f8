"""Authentication and authorization of callers (SMART Backend Services) and the principal each request runs as."""

from fhir_server.auth.principal import ANONYMOUS, SYSTEM, Principal

__all__ = ["ANONYMOUS", "SYSTEM", "Principal"]
