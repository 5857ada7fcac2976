"""Errors with fields: what a pinus caller reads as ``err.code``."""


class CodedError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def coded(code, message):
    raise CodedError(code, message)
