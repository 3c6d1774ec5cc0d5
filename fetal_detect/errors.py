"""The one exception type for user errors. The CLI prints it as one line; the service answers 4xx."""


class FetalDetectError(Exception):
    """A problem with the user's input (file, flag, dataset), reported as one line, never a traceback.

    ``status`` is the HTTP status the web service answers with (400 by default).
    """

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def short(value, limit: int = 40) -> str:
    """``value`` as text cut to ``limit`` characters (for echoing user input in an error message)."""
    text = str(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text):,} chars)"
