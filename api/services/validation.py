"""Input rules shared by every service (and documented in the OpenAPI as patterns): what reaches
SQL as a name is checked here and quoted as an identifier there."""
from __future__ import annotations

import re

from api.errors import Invalid

CLUSTER_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{2,62}$")
SQL_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
SIZING_RE = re.compile(r"^([1-9][0-9]?)cpu([1-9][0-9]{0,3})gb$")
LOCALE_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
ENCODINGS = ("UTF8", "LATIN1", "LATIN9", "SQL_ASCII", "WIN1252", "EUC_JP", "EUC_KR")
RESERVED_ROLES = ("postgres", "public", "none")


def check_sql_name(value: str, field: str) -> str:
    """A database (or other SQL object) name: what reaches SQL is also quoted as an identifier."""
    if not SQL_NAME_RE.match(value or ""):
        raise Invalid(f"{field} must be 1-63 characters: letters, digits or _, not starting with a digit",
                      field=field)
    return value


def check_role_name(value: str, field: str) -> str:
    """A login role the tenant may own: not the server's nor the service's own roles (pgdbaas_*)."""
    check_sql_name(value, field)
    if value.lower() in RESERVED_ROLES or value.lower().startswith(("pg_", "pgdbaas_")):
        raise Invalid(f"{field} must not be postgres, public, none, pg_* or pgdbaas_*", field=field)
    return value
