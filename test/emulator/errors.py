"""Errors the emulator answers with: PostHog's error shape (type, code, detail, attr) and its HTTP status."""


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


class HogQLError(ApiError):
    def __init__(self, detail):
        super().__init__(400, "validation_error", "hogql_error", detail)
