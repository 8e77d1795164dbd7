"""One JSON shape for every error the API returns: ``{"error": {"code": ..., "message": ...}}``.

Routes raise :class:`ApiError`; the handlers installed here also turn FastAPI's own errors (unknown
route 404, 405, request validation 422), an unreachable job store (503 with Retry-After) and any
unexpected exception (500) into that shape, so a client never sees FastAPI's default ``{"detail": ...}``.
The 503 is an ordinary response: the connection stays open for the client's retry.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.jobs import StoreUnavailable
from service.schemas import ErrorBody, ErrorDetail

log = logging.getLogger(__name__)

CODES_BY_STATUS = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    408: "upload_timeout", 413: "upload_too_large", 415: "unsupported_media_type", 422: "invalid_request", 429: "queue_full",
    500: "internal_error", 503: "unavailable",
}


class ApiError(Exception):
    """An error response: HTTP status, stable code, human message (and optional headers, details)."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None,
                 details: list[dict] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers, self.details = status, code, message, headers, details


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None,
                   details: list[dict] | None = None) -> JSONResponse:
    body = ErrorBody(error=ErrorDetail(code=code, message=message, details=details))
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


def error_responses(*statuses: int) -> dict[int | str, dict]:
    """OpenAPI ``responses`` entries documenting the error body for these statuses."""
    return {status: {"model": ErrorBody, "description": CODES_BY_STATUS.get(status, "error")} for status in statuses}


async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc.status, exc.code, exc.message, exc.headers, exc.details)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if exc.status_code == 404 and exc.detail == "Not Found":
        message = f"There is no {request.url.path} on this server; see /docs for the API."
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}."
    elif exc.status_code == 400 and exc.detail == "There was an error parsing the body":  # FastAPI's own
        message = "The request body could not be read: send JSON, encoded as UTF-8."
    else:
        message = str(exc.detail)
    code = CODES_BY_STATUS.get(exc.status_code, f"http_{exc.status_code}")
    return error_response(exc.status_code, code, message, getattr(exc, "headers", None))


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    details = [
        {"field": ".".join(str(part) for part in error["loc"]), "problem": error["msg"]} for error in exc.errors()
    ]
    message = "The request is not valid: " + "; ".join(f"{d['field']}: {d['problem']}" for d in details)
    return error_response(422, "invalid_request", message, details=details)


def _store_unavailable(retry_after_seconds: int):
    async def handle(request: Request, exc: StoreUnavailable) -> JSONResponse:
        log.warning("%s %s: %s", request.method, request.url.path, exc)
        return error_response(503, "store_unavailable",
                              f"The job store is unreachable right now; try again in {retry_after_seconds} s.",
                              headers={"Retry-After": str(retry_after_seconds)})

    return handle


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error",
                          "The server hit an internal error; the operator can find the details in its log.")


def install_error_handlers(app: FastAPI, retry_after_seconds: int) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StoreUnavailable, _store_unavailable(retry_after_seconds))
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
