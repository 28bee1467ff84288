"""One small exception tree; the CLI turns any ServingOpsError into a one-line message and exit 1."""


class ServingOpsError(Exception):
    """Base class for every error this tool reports to a user."""


class CommandError(ServingOpsError):
    """An external binary failed, timed out or could not be started."""


class ToolError(ServingOpsError):
    """A pinned tool (kustomize, kubeconform) is missing or has the wrong version."""


class SchemaError(ServingOpsError):
    """The schema store could not be built (bad CRD, checksum mismatch, missing source)."""


class InputError(ServingOpsError):
    """A user-supplied file or argument is invalid."""
