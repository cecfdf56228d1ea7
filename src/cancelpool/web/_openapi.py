"""The OpenAPI 3.1 document of the API, served at ``/api/openapi.json``."""

from __future__ import annotations

from typing import Any

from .. import __version__


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_JOB_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1},
}
_CANCEL_OUT = {"$ref": "#/components/schemas/CancelOutcome"}
_COMMON = {"401": _error("No token, or a wrong one."), "403": _error("Another origin.")}


def openapi_document() -> dict[str, Any]:
    """The document (a fresh dict each call)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "cancelpool web",
            "version": __version__,
            "description": "Watch, inspect, submit and cancel the jobs of a cancelpool queue. "
            "Every request needs the token (Authorization: Bearer TOKEN, or the cookie that "
            "/?token=TOKEN sets); GET never changes anything; other origins are refused.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {"error": {"type": "string"}},
                    "required": ["error"],
                },
                "JobRow": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "integer"},
                        "task": {"type": "string"},
                        "name": {"type": ["string", "null"]},
                        "status": {
                            "enum": [
                                "queued",
                                "running",
                                "completed",
                                "failed",
                                "cancelled",
                                "interrupted",
                            ]
                        },
                        "parent": {"type": ["integer", "null"]},
                        "progress_message": {"type": ["string", "null"]},
                        "done": {"type": ["number", "null"]},
                        "total": {"type": ["number", "null"]},
                        "cancel_requested": {"type": "boolean"},
                        "forced": {"type": "boolean"},
                        "summary": {"type": "string"},
                    },
                },
                "CancelOutcome": {
                    "type": "object",
                    "properties": {
                        "cancelled": {"type": "array", "items": {"type": "integer"}},
                        "requested": {"type": "array", "items": {"type": "integer"}},
                        "already_finished": {"type": "array", "items": {"type": "integer"}},
                    },
                },
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/jobs": {
                "get": {
                    "summary": "Jobs, newest first, a page at a time",
                    "parameters": [
                        {
                            "name": "status",
                            "in": "query",
                            "schema": {"type": "array", "items": {"type": "string"}},
                            "explode": True,
                        },
                        {"name": "pattern", "in": "query", "schema": {"type": "string"}},
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 500},
                        },
                        {
                            "name": "cursor",
                            "in": "query",
                            "description": "next_cursor of the previous page",
                            "schema": {"type": "integer"},
                        },
                    ],
                    "responses": {
                        "200": _ok(
                            "A page",
                            {
                                "type": "object",
                                "properties": {
                                    "jobs": {
                                        "type": "array",
                                        "items": {"$ref": "#/components/schemas/JobRow"},
                                    },
                                    "next_cursor": {"type": ["integer", "null"]},
                                },
                            },
                        ),
                        "400": _error("A bad filter, limit or cursor."),
                        **_COMMON,
                    },
                },
                "post": {
                    "summary": "Submit a job (the live servers' --allow patterns apply)",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["task"],
                                    "properties": {
                                        "task": {"type": "string"},
                                        "args": {"type": "array"},
                                        "kwargs": {"type": "object"},
                                        "name": {"type": "string"},
                                        "timeout": {"type": "number"},
                                        "priority": {"type": "integer"},
                                        "parent": {"type": "integer"},
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "201": _ok("Queued", {"type": "object"}),
                        "400": _error("A malformed task, name or argument."),
                        "403": _error("No live server allows the task, or another origin."),
                        "401": _COMMON["401"],
                    },
                },
            },
            "/api/jobs/{job_id}": {
                "get": {
                    "summary": "A job: arguments, progress history, result, partial result, "
                    "error and traceback, children",
                    "parameters": [_JOB_ID],
                    "responses": {
                        "200": _ok("The job", {"type": "object"}),
                        "404": _error("No such job."),
                        **_COMMON,
                    },
                }
            },
            "/api/jobs/{job_id}/cancel": {
                "post": {
                    "summary": "Cancel a job and its descendants",
                    "parameters": [_JOB_ID],
                    "responses": {
                        "200": _ok("What happened", _CANCEL_OUT),
                        "404": _error("No such job."),
                        **_COMMON,
                    },
                }
            },
            "/api/cancel": {
                "post": {
                    "summary": "Cancel every unfinished job whose name matches a pattern",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["pattern"],
                                    "properties": {
                                        "pattern": {"type": "string"},
                                        "message": {"type": "string"},
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": _ok("What happened", _CANCEL_OUT),
                        "400": _error("A bad pattern."),
                        **_COMMON,
                    },
                }
            },
            "/api/stats": {
                "get": {
                    "summary": "Jobs per status, live servers, finished jobs and cancel "
                    "latencies seen since this dashboard started",
                    "responses": {"200": _ok("Stats", {"type": "object"}), **_COMMON},
                }
            },
            "/api/events": {
                "get": {
                    "summary": "Server-sent events: 'update' with the changed job rows and "
                    "the counts",
                    "responses": {
                        "200": {
                            "description": "An event stream",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        },
                        **_COMMON,
                    },
                }
            },
        },
    }
