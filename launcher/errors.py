"""User-facing errors: one line that names the problem and the fix; the CLI turns them into exit code 2."""


class UserError(Exception):
    """A mistake in what the user asked for. Raised before anything is provisioned or written."""

    exit_code = 2


def did_you_mean(word: str, choices) -> str:
    import difflib

    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
