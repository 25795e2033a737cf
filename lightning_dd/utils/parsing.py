"""Command-line parsing errors as one sentence.

jsonargparse reports a mistyped option by printing the whole usage (over a hundred lines for
``lightning-dd fit``) and then a message that may span several lines; the sentence that matters
scrolls away. The parsers of ``lightning-dd`` print only ``lightning-dd: error: <sentence>`` and
exit with status 2, and :func:`one_sentence` rewrites jsonargparse's messages into that
sentence (``model.ipc expects an integer, got abc``), suggesting the closest option name for a
typo.
"""

from __future__ import annotations

import difflib
import re
import sys
from typing import NoReturn

from jsonargparse import ArgumentParser
from lightning.pytorch.cli import LightningArgumentParser

_TYPES = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "str": "a string",
    "dict": "a mapping such as {key: value}",
    "list": "a list such as [a, b]",
}
_OPTIONS_ONLY = {"config", "ckpt_path", "print_config"}  # command-line options, not config settings
_KEY = re.compile(r'^(?:Parser key|Key) "([^"]+)":?\s*(.*)$', re.S)
_EXPECTED = re.compile(r"Expected a (<class '[\w.]+'>|typing\.Literal\[[^\n]*?\])(?=\.|\s|$)")
_GOT = re.compile(r"(?:Got value|Given value): (.*?)\s*(?:\n|$)")
_UNKNOWN_KEY = re.compile(r"(?:does not accept option|Key) '([^']+)'(?: is not expected)?")


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def one_sentence(
    message: str, options: list[str] | None = None, prog: str = "lightning-dd", key_prefix: str = ""
) -> str:
    """jsonargparse's (possibly multi-line) error message as one sentence with a fix.

    Args:
        message: the parser's message.
        options: the parser's option strings, to suggest the closest one for an unknown option.
        prog: the command, named in the pointer to ``--help``.
        key_prefix: put before a setting's name: ``""`` names it as in a config file
            (``model.ipc``), ``"--"`` as a command-line flag (``--epochs``).
    """
    text = message.strip()
    help_hint = f"see `{prog} --help`"
    if "Subclasses are disabled for NetSpec" in _flat(text) or ("NetSpec" in text and "init_args" in text):
        return "a network is given as {name: <import path>, kwargs: {...}} (e.g. {name: torchvision.models.resnet18}), not with class_path/init_args"
    unknown = re.match(r"unrecognized arguments: (.*)$", _flat(text))
    if unknown:
        words = unknown.group(1).split()
        flag = next((w.split("=")[0] for w in words if w.startswith("-")), words[0] if words else "")
        close = difflib.get_close_matches(flag, options or [], n=1, cutoff=0.8)
        hint = f"did you mean {close[0]}?" if close else help_hint
        return f"unknown option {' '.join(words)} ({hint})"
    unknown_key = _UNKNOWN_KEY.search(text)
    if unknown_key and ("does not accept option" in text or "is not expected" in text):
        name = unknown_key.group(1).removeprefix("fit.")
        close = difflib.get_close_matches(f"--{name}", options or [], n=1, cutoff=0.8)
        hint = f"did you mean {key_prefix or ''}{close[0][2:]}?" if close else help_hint
        return f"unknown setting {key_prefix}{name} ({hint})"
    key = _KEY.match(text)
    if key:
        name, rest = key.group(1), key.group(2)
        name = name.removeprefix("fit.")
        name = f"--{name}" if name in _OPTIONS_ONLY else key_prefix + name
        expected = _EXPECTED.findall(rest)
        got = _GOT.search(rest)
        readable = _readable(expected)
        if readable and got:
            optional = " (or null)" if "<class 'NoneType'>" in expected else ""
            return f"{name} expects {readable}{optional}, got {got.group(1).strip()} ({help_hint})"
        missing = re.search(r"File does not exist: '?([^']*)'?", rest)
        if missing:
            return f"{name}: the file {missing.group(1)} does not exist; check the path"
        return f"{name}: {_first_clause(rest)} ({help_hint})"
    return f"{_first_clause(text)} ({help_hint})"


def _readable(expected: list[str]) -> str:
    """``["<class 'int'>"]`` -> ``an integer``; Literal types -> ``one of a, b, c`` (null left out)."""
    values: list[str] = []
    kinds: list[str] = []
    for item in expected:
        if item.startswith("typing.Literal["):
            values += [v.strip().strip("'\"") for v in item[len("typing.Literal[") : -1].split(",")]
        else:
            name = item[len("<class '") : -2].split(".")[-1]
            if name != "NoneType":
                kinds.append(_TYPES.get(name, name))
    parts = list(dict.fromkeys(kinds))
    if values:
        parts.append("one of " + ", ".join(dict.fromkeys(values)))
    return " or ".join(parts)


def _first_clause(text: str) -> str:
    """The first line of a multi-line message, whitespace collapsed and without a final period."""
    lines = [line.strip(" -") for line in text.strip().splitlines() if line.strip(" -")]
    first = lines[0] if lines else text
    # jsonargparse appends the list of union subtypes on later lines; the first line says what went wrong.
    return _flat(first).rstrip(".:")


class OneSentenceErrors:
    """Mixin for jsonargparse parsers: errors print one line (no usage dump) and exit with 2."""

    key_prefix = ""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:  # type: ignore[override]
        from jsonargparse._common import debug_mode_active

        if not getattr(self, "exit_on_error", True) or debug_mode_active():
            super().error(message, ex)  # type: ignore[misc]
        parser = getattr(ex, "subcommand_parser", None) or self
        options = [o for action in getattr(parser, "_actions", []) for o in action.option_strings]
        prog = str(getattr(parser, "prog", "lightning-dd")).replace(" [options]", "")
        sys.stderr.write(f"lightning-dd: error: {one_sentence(message, options, prog, self.key_prefix)}\n")
        sys.exit(2)


class CommandParser(OneSentenceErrors, ArgumentParser):
    """The parser of the standalone commands (evaluate, pool, export-folder); settings are flags."""

    key_prefix = "--"


class FitParser(OneSentenceErrors, LightningArgumentParser):
    """The parser of ``lightning-dd fit`` (LightningCLI's, with one-sentence errors)."""
