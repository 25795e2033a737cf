"""User-facing errors.

Everything a user can get wrong (a name, a path, a size, a damaged file) is raised as a
:class:`LightningDDError` with one sentence that says what is wrong and how to fix it. The CLI
prints that sentence and exits with status 2 instead of showing a traceback.
"""


class LightningDDError(Exception):
    """Base class for errors caused by user input rather than by a bug."""


class ConfigError(LightningDDError, ValueError):
    """A configuration value is invalid or inconsistent with another one."""


class DataError(LightningDDError):
    """Real data could not be found or read."""


class FileFormatError(LightningDDError):
    """A distilled-set export, pool cache or checkpoint is damaged or of another kind."""


class DivergenceError(LightningDDError):
    """The matching loss became NaN or infinite."""


def choose(kind: str, name: str, options) -> str:
    """Return ``name`` if it is one of ``options``; otherwise raise a one-sentence ConfigError."""
    options = sorted(options)
    if name not in options:
        raise ConfigError(f"unknown {kind} {name!r}; choose one of: {', '.join(options)}")
    return name
