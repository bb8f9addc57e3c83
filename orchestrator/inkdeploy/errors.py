"""The one exception type users see: a message that says what is wrong and what to do."""


class InkdeployError(Exception):
    """An error the CLI prints as one clear sentence, without a traceback.

    ``exit_code`` lets automation tell classes of failure apart.
    """

    exit_code = 1

    def __init__(self, message: str, *, detail: str | None = None, exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        # Extra evidence (a console log tail, a command's stderr) printed after the sentence.
        self.detail = detail
        if exit_code is not None:
            self.exit_code = exit_code


class LabError(InkdeployError):
    """Something about the local lab fleet is wrong."""


class PlanError(InkdeployError):
    """The fleet or the request is not in a state a rollout can start from; nothing changed."""

    exit_code = 2
