"""The lockfile's JSON Schema, as data: the one description of the format.

``schemas/lockfile.schema.json`` (published for editors and other tools, and shipped
in the wheel) is this value written as JSON, two-space indented;
``tests/unit/test_lockfile.py`` holds the two equal. Kept in the core, so that
reading a lockfile strictly needs no file but the lockfile. To change the format,
edit it here, then write the published copy::

    python -c "import json; from pipeline.core.lock.published import LOCKFILE_SCHEMA; \\
    print(json.dumps(LOCKFILE_SCHEMA, indent=2, ensure_ascii=False))" \\
    > schemas/lockfile.schema.json
"""

from __future__ import annotations

from typing import Any, Final

LOCKFILE_SCHEMA: Final[dict[str, Any]] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://imgspec.dev/schemas/lockfile.schema.json",
    "title": "imgspec lockfile",
    "description": (
        "What imgspec has requested, paid for and downloaded for one manifest. Written only by "
        "imgspec; commit it to git beside the manifest. imgspec reads it strictly: a file that "
        "breaks this schema is refused, naming the entry and the field. Patterns end with "
        "(?![\\s\\S]) rather than $ so that no trailing newline slips through."
    ),
    "type": "object",
    "required": ["version", "entries"],
    "additionalProperties": False,
    "properties": {
        "version": {"const": 1, "description": "Lockfile format version."},
        "generator": {"type": "string", "description": "The tool that wrote the file (imgspec)."},
        "manifest": {
            "type": "string",
            "description": "File name of the manifest this lockfile belongs to.",
        },
        "entries": {
            "type": "object",
            "description": "One entry per instance key (job@axis=value,...), sorted by key.",
            "additionalProperties": {"$ref": "#/$defs/entry"},
            "propertyNames": {"minLength": 1, "description": "An instance key; never empty."},
        },
        "uploads": {
            "type": "object",
            "description": (
                "Local input images uploaded with POST /v1/uploads/images, by the sha256 of "
                "their content: the URL to send and when it expires. Uploads are free: imgspec "
                "reuses a URL while it has a comfortable margin and uploads again after; losing "
                "this section only costs a new upload."
            ),
            "propertyNames": {
                "type": "string",
                "pattern": "^[0-9a-f]{64}(?![\\s\\S])",
                "description": "The sha256 of the image's bytes, 64 lowercase hex digits.",
            },
            "additionalProperties": {"$ref": "#/$defs/upload"},
        },
        "retired": {
            "type": "array",
            "description": (
                "The spend of entries since removed (imgspec prune): the account paid for them, "
                "so the manifest's 'charged so far' keeps counting them. One record per "
                "payment; merges take the union."
            ),
            "items": {"$ref": "#/$defs/retired"},
        },
    },
    "$defs": {
        "entry": {
            "type": "object",
            "description": "The recorded state of one instance.",
            "required": ["job", "fingerprint", "status"],
            "additionalProperties": False,
            "properties": {
                "job": {
                    "type": "string",
                    "description": "The job the instance belongs to.",
                    "minLength": 1,
                },
                "fingerprint": {
                    "type": "string",
                    "description": (
                        "sha256 of the canonical JSON of the rendered request (images by "
                        "content hash)."
                    ),
                    "minLength": 1,
                },
                "status": {
                    "enum": ["submitting", "running", "done", "failed"],
                    "description": (
                        "submitting: idempotency key recorded, POST outcome unknown; running: "
                        "task id known; done: outputs downloaded and verified; failed: the last "
                        "attempt failed."
                    ),
                },
                "request": {
                    "type": "object",
                    "description": (
                        "The rendered request body; local images by path and hash, never "
                        "secrets."
                    ),
                },
                "matrix": {
                    "type": "object",
                    "description": "The instance's matrix values (inherited and its own).",
                },
                "seed": {
                    "type": ["integer", "null"],
                    "minimum": 0,
                    "maximum": 2147483647,
                    "description": (
                        "The seed sent (derived from the key unless the manifest set one); null "
                        "for seed: random."
                    ),
                },
                "idempotency_key": {
                    "type": ["string", "null"],
                    "pattern": "^[!-~]{1,200}(?![\\s\\S])",
                    "description": (
                        "The Idempotency-Key of the current attempt, recorded before the POST "
                        "(sent as an HTTP header: 1 to 200 visible ASCII characters)."
                    ),
                },
                "task_id": {
                    "type": ["string", "null"],
                    "minLength": 1,
                    "description": "The API's task id, recorded right after the POST.",
                },
                "attempts": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "How many attempts (distinct idempotency keys) were made.",
                    "maximum": 2147483647,
                },
                "reroll": {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": 2147483647,
                    "description": (
                        "How many times review re-rolled the instance (imgspec review, verdict "
                        "reroll); its seed is derived from its request and this count. Absent "
                        "means 0."
                    ),
                },
                "failure": {
                    "enum": ["results", "task-failed", "task-gone", "refused"],
                    "description": (
                        "Why a failed entry's attempt failed. results: the task completed and "
                        "was paid but its results could not be fetched; the next run polls the "
                        "same task again, free. task-failed: the API failed or cancelled the "
                        "task (refunded); task-gone: the API no longer knows the task (404); "
                        "refused: the submission was refused or never sent. These three pay a "
                        "new attempt, as does a failed entry without this field."
                    ),
                },
                "last_error": {
                    "type": ["string", "null"],
                    "description": "The API's message for the last failure.",
                },
                "reused_from": {
                    "type": "string",
                    "description": (
                        "The paid result this entry's images were taken from (another instance "
                        "key, with its manifest when another's): the same request, reused at no "
                        "cost. Absent when the entry's own task made them."
                    ),
                },
                "cost": {
                    "type": "number",
                    "minimum": 0,
                    "maximum": 1000000000000000,
                    "description": (
                        "CNY charged for the current attempt (0 until its task is created, and "
                        "after a refund)."
                    ),
                },
                "charged": {
                    "type": "number",
                    "minimum": 0,
                    "maximum": 1000000000000000,
                    "description": (
                        "CNY charged for this instance over all its attempts, net of refunds "
                        "(failed tasks are not charged). Absent in lockfiles written before it "
                        "existed: then taken to be cost."
                    ),
                },
                "created_at": {
                    "type": ["string", "null"],
                    "description": "When the entry was first recorded (ISO 8601, UTC).",
                },
                "updated_at": {
                    "type": ["string", "null"],
                    "description": "When the entry last changed (ISO 8601, UTC).",
                },
                "outputs": {
                    "type": "array",
                    "description": "The downloaded images, in the task's order.",
                    "items": {"$ref": "#/$defs/output"},
                },
                "paid_by": {
                    "type": "string",
                    "minLength": 1,
                    "description": (
                        "Where the current task was paid when it was not paid by this entry: "
                        "the API answered its submission as a replay of an earlier one "
                        "(Idempotency-Replayed: true), or another lockfile of the project "
                        "records the task. The attempt is then charged 0 here. Absent when this "
                        "entry paid."
                    ),
                },
            },
            "allOf": [
                {
                    "if": {
                        "properties": {"status": {"const": "submitting"}},
                        "required": ["status"],
                    },
                    "then": {
                        "required": ["idempotency_key"],
                        "properties": {"idempotency_key": {"type": "string"}},
                    },
                    "description": (
                        "A submission whose outcome is unknown is replayed with its recorded "
                        "key."
                    ),
                },
                {
                    "if": {"properties": {"status": {"const": "running"}}, "required": ["status"]},
                    "then": {
                        "required": ["task_id"],
                        "properties": {"task_id": {"type": "string"}},
                    },
                    "description": "A running entry is resumed by polling its task.",
                },
            ],
        },
        "output": {
            "type": "object",
            "required": ["path", "sha256", "bytes", "width", "height"],
            "additionalProperties": False,
            "properties": {
                "path": {
                    "type": "string",
                    "pattern": (
                        "^(?:\\.\\./)*(?:[^/\\\\\\x00-\\x1f.]|\\.(?:[^/\\\\\\x00-\\x1f.]|\\.[^/\\\\\\x00-\\x1f]))[^/\\\\\\x00-\\x1f]*(?:/(?:[^/\\\\\\x00-\\x1f.]|\\.(?:[^/\\\\\\x00-\\x1f.]|\\.[^/\\\\\\x00-\\x1f]))[^/\\\\\\x00-\\x1f]*)*(?![\\s\\S])"
                    ),
                    "description": (
                        "Path relative to the lockfile's folder, with / separators: never "
                        "absolute or empty, no backslash or control character, and no '.' or "
                        "'..' segment except leading '..' segments (outputs/ beside manifests/ "
                        "is reached as ../outputs/...)."
                    ),
                },
                "sha256": {
                    "type": "string",
                    "pattern": "^[0-9a-f]{64}(?![\\s\\S])",
                    "description": "sha256 of the file's bytes.",
                },
                "bytes": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "File size in bytes.",
                    "maximum": 9007199254740991,
                },
                "width": {
                    "type": "integer",
                    "minimum": 1,
                    "description": "Width in pixels.",
                    "maximum": 2147483647,
                },
                "height": {
                    "type": "integer",
                    "minimum": 1,
                    "description": "Height in pixels.",
                    "maximum": 2147483647,
                },
                "url": {
                    "type": "string",
                    "description": (
                        "The result URL it was downloaded from (http or https; it expires)."
                    ),
                    "pattern": "^https?://",
                },
                "expires_at": {
                    "type": "integer",
                    "description": "When the URL expires (Unix seconds, as the API said).",
                    "minimum": 0,
                },
            },
            "description": "One downloaded image.",
        },
        "upload": {
            "type": "object",
            "description": "One uploaded image.",
            "required": ["url", "expires_at"],
            "additionalProperties": False,
            "properties": {
                "url": {
                    "type": "string",
                    "minLength": 1,
                    "pattern": "^https?://[^\\s\\x1c-\\x1f]+(?![\\s\\S])",
                    "$comment": (
                        "\\x1c-\\x1f are spelt out because Python's \\s counts them as white "
                        "space and Unicode's (other validators') does not: every validator then "
                        "agrees."
                    ),
                    "description": "The http(s) URL the upload returned, without spaces",
                },
                "expires_at": {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": 253402300799,
                    "description": (
                        "When the URL stops working (Unix seconds): the reply's created_at plus "
                        "72 hours."
                    ),
                },
            },
        },
        "retired": {
            "type": "object",
            "description": "What a removed entry had been charged, and for which task.",
            "required": ["key", "job", "charged"],
            "additionalProperties": False,
            "properties": {
                "key": {
                    "type": "string",
                    "minLength": 1,
                    "description": "The instance key the entry had.",
                },
                "job": {
                    "type": "string",
                    "minLength": 1,
                    "description": "The job the entry belonged to.",
                },
                "charged": {
                    "type": "number",
                    "minimum": 0,
                    "maximum": 1000000000000000,
                    "description": "CNY charged for it over all its attempts, net of refunds.",
                },
                "task_id": {
                    "type": ["string", "null"],
                    "minLength": 1,
                    "description": "The API's task id of its last attempt.",
                },
                "idempotency_key": {
                    "type": ["string", "null"],
                    "pattern": "^[!-~]{1,200}(?![\\s\\S])",
                    "description": "The Idempotency-Key of its last attempt.",
                },
            },
        },
    },
}
