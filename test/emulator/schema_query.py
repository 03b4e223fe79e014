"""PostHog's schema query: the answer to {"query": {"kind": "DatabaseSchemaQuery"}}, in PostHog's format.

PostHog (posthog/api/services/query.py, process_query_model) answers
    {"tables": {name: table, ...}, "joins": [...]}
with database.serialize(context, include_hidden_posthog_tables=True) (posthog/hogql/database/database.py): every root
table, sorted by name, as a DatabaseSchemaPostHogTable {"fields": {...}, "id": name, "name": name, "row_count": null,
"type": "posthog"}, then the system.* tables (type "system"), warehouse tables and views.  Each field is a
DatabaseSchemaField (posthog/schema.py) {"chain", "fields", "hogql_value", "id", "name", "schema_valid", "table",
"type"}, its type one of DatabaseSerializedFieldType: integer, float, decimal, string, datetime, date, boolean, array,
json, unknown, expression, lazy_table, virtual_table, field_traverser, view, materialized_view.  team_id is never
listed for PostHog's tables (serialize_fields); UUID fields are "string", Int8 flags such as is_deleted are Boolean
fields in HogQL, so "boolean"; hogql_value is the name, in backquotes when it holds one of @-!$+.

The tables listed are the emulator's own (store.TABLES), so a table added there is listed too; the events table
also lists the joins PostHog's does (pdi, poe, person, session), which are not columns."""

import json

from hogtypes import K_ARRAY, K_BOOL, K_DATETIME, K_FLOAT, K_INT, K_INT8, K_JSON, K_STRING, K_UUID
from store import TABLES

FIELD_TYPES = {K_STRING: "string", K_UUID: "string", K_JSON: "json", K_INT: "integer", K_INT8: "boolean",
               K_FLOAT: "float", K_BOOL: "boolean", K_DATETIME: "datetime", K_ARRAY: "array"}

WRAPPED = ["@", "-", "!", "$", "+"]  # HOGQL_CHARACTERS_TO_BE_WRAPPED


def field(name, ftype, table=None, fields=None, chain=None, id_=None):
    hogql_value = "`%s`" % name if any(c in name for c in WRAPPED) else name
    return {"chain": chain, "fields": fields, "hogql_value": hogql_value, "id": id_, "name": name,
            "schema_valid": True, "table": table, "type": ftype}


def column_names(tname):
    return [c[0] for c in TABLES[tname]["cols"] if c[0] != "team_id"] if tname in TABLES else None


def joins(tname):
    """The non-column fields PostHog lists for a table (posthog/hogql/database/schema/events.py, with person_id a
    column as in the persons-on-events modes): lazy joins, the virtual person table, the person traverser."""
    if tname != "events":
        return []
    pdi_fields = column_names("person_distinct_ids") or ["distinct_id", "person_id", "person"]
    session_fields = column_names("sessions") or []
    return [
        field("pdi", "lazy_table", table="person_distinct_ids", fields=pdi_fields, id_="pdi"),
        field("poe", "virtual_table", table="events", fields=["id", "created_at", "properties"]),
        field("person", "field_traverser", chain=["poe"]),
        field("session", "lazy_table", table="sessions", fields=session_fields, id_="session"),
    ]


def schema():
    tables = {}
    for tname in sorted(TABLES):
        fields = {}
        for name, kind, _nullable, _prec in TABLES[tname]["cols"]:
            if name == "team_id":
                continue
            fields[name] = field(name, FIELD_TYPES.get(kind, "unknown"))
        for f in joins(tname):
            fields[f["name"]] = f
        tables[tname] = {"fields": fields, "id": tname, "name": tname, "row_count": None,
                         "type": "system" if tname.startswith("system.") else "posthog"}
    return {"tables": tables, "joins": []}


def answer():
    """The 200 body of a DatabaseSchemaQuery, for handler.py."""
    return {"body": json.dumps(schema(), ensure_ascii=False).encode("utf-8")}
