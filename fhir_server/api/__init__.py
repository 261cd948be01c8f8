"""REST API of the FHIR server."""
