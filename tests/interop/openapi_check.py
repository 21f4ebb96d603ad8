"""Validates xyte-edge's OpenAPI document with a validator nobody here wrote: openapi-spec-validator==0.9.0 (PyPI),
against the OpenAPI 3.1 schema and its semantic checks (refs resolve, path parameters declared, operation ids unique,
defaults match their schemas). Every Schema Object is also checked against the JSON Schema 2020-12 meta-schema with
jsonschema (a dependency of the validator), which catches what the spec validator lets through (e.g. `type: "int"`).

Usage: python tests/interop/openapi_check.py path/to/openapi.json
  (produce the file with `XYTE_WRITE_OPENAPI=1 cargo test --lib http::openapi`, which writes
   $CARGO_TARGET_DIR/openapi.json, or fetch it from a running daemon: GET /v1/openapi.json)
Exits 0 when valid; non-zero with every error found otherwise.
"""

import json
import sys

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from jsonschema_path import SchemaPath
from openapi_spec_validator import OpenAPIV31SpecValidator, validate


def fail(message):
    print(f"FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def schema_objects(node, where=""):
    """Every Schema Object of the document: values of `schema` keys and of components/schemas."""
    if isinstance(node, dict):
        for key, value in node.items():
            at = f"{where}/{key}"
            if key == "schema" and isinstance(value, (dict, bool)):
                yield at, value
            elif where == "/components" and key == "schemas" and isinstance(value, dict):
                yield from ((f"{at}/{name}", s) for name, s in value.items())
            yield from schema_objects(value, at)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from schema_objects(value, f"{where}/{i}")


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(64)
    path = sys.argv[1]
    try:
        with open(path, encoding="utf-8") as f:
            spec = json.load(f)
    except (OSError, ValueError) as e:
        fail(f"cannot read {path}: {e}")

    if not isinstance(spec, dict) or not str(spec.get("openapi", "")).startswith("3.1."):
        fail(f"{path}: expected an OpenAPI 3.1 document, got openapi={spec.get('openapi')!r}")

    # Every error, not only the first, so one run shows everything to fix.
    errors = []
    try:
        for e in OpenAPIV31SpecValidator(SchemaPath.from_dict(spec)).iter_errors():
            where = "/".join(str(p) for p in getattr(e, "path", []) or []) or "(root)"
            errors.append(f"{where}: {getattr(e, 'message', e)}")
    except Exception as e:  # noqa: BLE001 - an unresolvable $ref raises instead of being reported
        errors.append(f"validator stopped: {type(e).__name__}: {str(e)[:300]}")
    for where, schema in schema_objects(spec):
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as e:
            errors.append(f"{where}: not a valid JSON Schema 2020-12: {e.message}")
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    if errors:
        fail(f"{path}: {len(errors)} validation error(s)")

    # The library's documented entry point must agree (it raises on the first error).
    try:
        validate(spec, cls=OpenAPIV31SpecValidator)
    except Exception as e:  # noqa: BLE001 - any failure is a finding
        fail(f"{path}: {str(e)[:500]}")

    operations = sum(
        1
        for item in spec.get("paths", {}).values()
        for method in item
        if method in {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
    )
    tools = sum(1 for p in spec.get("paths", {}) if p.startswith("/v1/tools/"))
    if tools == 0:
        fail(f"{path}: no /v1/tools/{{name}} paths")
    print(f"ok: {path} is a valid OpenAPI {spec['openapi']} document ({len(spec['paths'])} paths, "
          f"{operations} operations, {tools} tools)")


if __name__ == "__main__":
    main()
