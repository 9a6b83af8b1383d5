"""One exception type for every error a user can fix; the CLI prints it as one line, no traceback."""


class LegibilityError(Exception):
    """Bad input or configuration. The message names the file, line and field where there is one."""


def where(path: object, line: int | None = None, field: str | None = None) -> str:
    """`path:line: field` prefix for error messages."""
    out = str(path)
    if line is not None:
        out += f":{line}"
    if field:
        out += f": {field}"
    return out
