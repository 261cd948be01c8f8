"""The regional FHIR R4B server: storage, REST API and the in-process FHIR service."""
