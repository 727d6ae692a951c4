"""Errors the service layer raises; each dialect renders them in its own body shape."""
from __future__ import annotations


class ServiceError(Exception):
    status_code = 400

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field


class NotFound(ServiceError):
    status_code = 404


class Conflict(ServiceError):
    """The resource's state forbids the operation, or another operation holds the cluster."""

    status_code = 409

    def __init__(self, message: str, *, request_id: str | None = None, field: str | None = None):
        super().__init__(message, field=field)
        self.request_id = request_id


class Forbidden(ServiceError):
    status_code = 403


class Invalid(ServiceError):
    status_code = 400


class OperationFailed(ServiceError):
    """A synchronous dialect waited for an operation that ended in ERROR or CANCELED; the message
    is the operation's own error text (e.g. the agent seed's "The user already exists").

    502: the API worked, the job it ran on the database host did not (host unreachable, a task
    failed); the body names the request, whose events tell the rest."""

    status_code = 502

    def __init__(self, message: str, *, request_id: str):
        super().__init__(message)
        self.request_id = request_id


class OperationTimeout(ServiceError):
    """A synchronous dialect waited PGDBAAS_SYNC_TIMEOUT seconds and the operation still runs; the
    body names the request to poll."""

    status_code = 504

    def __init__(self, message: str, *, request_id: str):
        super().__init__(message)
        self.request_id = request_id
