"""User-facing errors: one line that names the problem and the fix; the CLI turns each into its exit code."""


class UserError(Exception):
    """A mistake in what the user asked for. Raised before anything is provisioned or written; never retried."""

    exit_code = 2


class CapacityError(Exception):
    """The request is right but the capacity is short now: no instances in a zone, a Slurm job pending on
    `Resources`. Retryable: a foreground launch exits 75 (EX_TEMPFAIL, "try again later"), `launch watch` retries
    with backoff, the relay moves on to its next backend. `quota` marks a shortfall that waiting does not fix (a
    quota, an account limit): not retried in place, only elsewhere."""

    exit_code = 75

    def __init__(self, message: str, *, quota: bool = False):
        super().__init__(message)
        self.quota = quota


class NotConfirmed(Exception):
    """What was asked was sent, but its effect could not be confirmed (a cancel while the job's machine and its
    cloud cannot be reached): the CLI says why in one line and exits 1. Not a UserError: the request was right."""

    exit_code = 1


class NotLaunched(Exception):
    """The user answered no at the launch's confirmation: nothing was created. The CLI says "not launched" and exits
    1 (not an error of the request, so not 2)."""

    exit_code = 1


def did_you_mean(word: str, choices) -> str:
    import difflib

    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
