"""The judge's errors: one class per way a request can fail, each with a pt-BR message.

``retryable`` says whether asking again may help: a dropped connection or a
5xx may; a timeout, a 404 or a malformed reply would most likely happen again,
and retrying them would only multiply the wait.
"""
from __future__ import annotations


class JudgeError(RuntimeError):
    """Base class of the judge's errors."""

    retryable = False


class JudgeConnectionError(JudgeError):
    """The server could not be reached (refused, unknown host, reset before replying)."""

    retryable = True


class JudgeTimeoutError(JudgeError):
    """The server stayed silent for ``timeout`` seconds (while connecting or between two reads).

    Not retried: a judge that let a whole timeout pass will most likely do it again.
    """


class JudgeDeadlineError(JudgeTimeoutError):
    """One request took longer than ``deadline`` seconds in all (e.g. a reply dripping byte by byte)."""


class JudgeServerError(JudgeError):
    """The server answered with an error message."""


class JudgeHTTPError(JudgeServerError):
    """An HTTP error status; 5xx and 429 are retryable, other 4xx are not."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status

    @property
    def retryable(self) -> bool:  # type: ignore[override]
        return self.status >= 500 or self.status == 429


class ModelNotFoundError(JudgeHTTPError):
    """404: the server does not have the model (Ollama: not pulled yet)."""


class JudgeProtocolError(JudgeError):
    """The reply does not follow the protocol (malformed line, missing field)."""


class JudgeStreamError(JudgeProtocolError):
    """The stream ended before its last message (connection dropped mid-reply)."""

    retryable = True


class JudgeReplyTooLargeError(JudgeProtocolError):
    """The reply passed ``max_reply_bytes``: reading stopped there instead of filling the memory."""


class JudgeDependencyError(JudgeError, ImportError):
    """An optional package (``llama-cpp-python``) is missing."""


# Errors that would repeat for every item: scoring stops at once instead of recording them.
FATAL_ERRORS = (JudgeConnectionError, ModelNotFoundError, JudgeDependencyError)

__all__ = ["JudgeError", "JudgeConnectionError", "JudgeTimeoutError", "JudgeDeadlineError",
           "JudgeServerError", "JudgeHTTPError", "ModelNotFoundError", "JudgeProtocolError",
           "JudgeStreamError", "JudgeReplyTooLargeError", "JudgeDependencyError", "FATAL_ERRORS"]
