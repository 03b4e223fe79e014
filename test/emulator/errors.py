"""Errors the emulator answers with: PostHog's error shape (type, code, detail, attr) and its HTTP status.

HogQL errors follow posthog/api/query.py: an ExposedHogQLError becomes a DRF ValidationError(str(e), code_name),
so the body is {"type": "validation_error", "code": <code_name>, "detail": <message>, "attr": null} with
code_name "hogql_syntax_error" (SyntaxError: bad grammar, reserved aliases), "hogql_query_error" (QueryError:
unknown table or field) or "hogql_error" (any other exposed error).  PostHog versions before code_name existed
send every one of them as code "invalid_input" (drf-exceptions-hog's name for DRF's "invalid"): the server's
--legacy-error-codes switch gives that form."""


class ApiError(Exception):
    def __init__(self, status, type_, code, detail, attr=None, headers=None):
        super().__init__(detail)
        self.status = status
        self.type = type_
        self.code = code
        self.detail = detail
        self.attr = attr
        self.headers = headers or {}

    def body(self):
        return {"type": self.type, "code": self.code, "detail": self.detail, "attr": self.attr}


LEGACY_CODES = {"on": False}  # set once at start-up by server.py (--legacy-error-codes)


class HogQLError(ApiError):
    code_name = "hogql_error"

    def __init__(self, detail):
        super().__init__(400, "validation_error", "invalid_input" if LEGACY_CODES["on"] else self.code_name, detail)


class HogQLSyntaxError(HogQLError):
    """The text does not parse, or uses a reserved keyword as an alias (PostHog's hogql SyntaxError)."""
    code_name = "hogql_syntax_error"


class HogQLQueryError(HogQLError):
    """Valid syntax, but an unknown table or field (PostHog's hogql QueryError)."""
    code_name = "hogql_query_error"
