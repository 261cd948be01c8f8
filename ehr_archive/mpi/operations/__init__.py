"""The MPI's operations, one module each with its OperationDefinition, registered in fhir_server.operations.registry.

``match`` (Patient/$match, PDQm ITI-119), ``pix`` (Patient/$ihe-pix, PIXm ITI-83), ``link`` ($mpi-link,
$mpi-not-duplicate), ``merge`` ($merge, $unmerge).
"""

# The operation registry imports these modules; loading it first keeps an import of one of them cycle-free.
import fhir_server.operations  # noqa: F401
