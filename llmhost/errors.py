"""The one exception type the CLI turns into a clear sentence and a non-zero exit."""


class LlmhostError(Exception):
    """A problem the user can fix; its message is one clear sentence."""

    def __init__(self, message: str, exit_code: int = 1, fix: str | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.fix = fix
