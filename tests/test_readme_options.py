"""Every command and option the README shows is one the `eecc` parser accepts, written as it is used: an
option that takes a value is shown with one where the README lists options, a value among fixed choices is
one of them, and the README's runnable commands parse."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from eecc.cli import build_parser

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
PARSER = build_parser()
SUBCOMMANDS: dict[str, argparse.ArgumentParser] = next(
    a for a in PARSER._actions if isinstance(a, argparse._SubParsersAction)).choices


def _spans() -> list[str]:
    """Inline code spans, and each line of the README's fenced code blocks."""
    text = re.sub(r"^```.*?^```", "", README, flags=re.S | re.M)
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", README, flags=re.S | re.M)
    return [" ".join(s.split()) for s in re.findall(r"`([^`]+)`", text)] + [ln for b in blocks for ln in b.splitlines()]


def _listings() -> list[str]:
    """The places that list options as they are typed: the Commands table and the `compile` options paragraph."""
    table = README.split("## Commands", 1)[1].split("\n\n")[1]
    options = re.search(r"^`compile` options:.*?(?=\n\n)", README, flags=re.S | re.M).group(0)
    return [" ".join(s.split()) for s in re.findall(r"`([^`]+)`", table + "\n" + options)]


def _command(span: str) -> tuple[list[argparse.ArgumentParser] | None, list[str]]:
    """The parsers a span's options belong to and its tokens: `eecc X …` and `X …` (X a subcommand) to X's,
    a bare `--option …` to any subcommand's, anything else (python, ray, bench/…) to none."""
    tokens = span.replace("\\|", "|").split("#", 1)[0].split()
    if "eecc" in [t.rsplit("/", 1)[-1] for t in tokens[:1]] or (tokens[:1] and tokens[0].endswith("/eecc")):
        tokens = tokens[1:]
    elif tokens and tokens[0] not in SUBCOMMANDS and not tokens[0].startswith("-"):
        return None, tokens
    if tokens and tokens[0] in SUBCOMMANDS:
        return [SUBCOMMANDS[tokens[0]]], tokens[1:]
    return list(SUBCOMMANDS.values()), tokens


def _action(parsers, option: str) -> argparse.Action | None:
    return next((p._option_string_actions[option] for p in parsers if option in p._option_string_actions), None)


def _options(tokens: list[str]) -> list[tuple[str, str | None]]:
    """(option, the token after it if that is not an option) for each option among the tokens."""
    clean = [t.strip("[]") for t in tokens]
    return [(t, clean[i + 1] if i + 1 < len(clean) and not clean[i + 1].startswith("-") else None)
            for i, t in enumerate(clean) if re.fullmatch(r"--[a-z][a-z0-9-]*|-[a-zA-Z]", t)]


def test_every_option_the_readme_shows_exists():
    unknown = []
    for span in _spans():
        parsers, tokens = _command(span)
        if parsers is not None:
            unknown += [f"{o} in `{span}`" for o, _ in _options(tokens) if _action(parsers, o) is None]
    assert not unknown, "README options the parser does not have: " + "; ".join(unknown)


def test_listed_options_show_their_value_and_valid_choices():
    wrong = []
    for span in _listings():
        parsers, tokens = _command(span)
        for option, value in _options(tokens) if parsers else []:
            action = _action(parsers, option)
            if action is None:
                continue
            if action.nargs != 0 and value is None:
                wrong.append(f"`{span}`: {option} takes a value ({action.metavar or action.dest.upper()})")
            if action.choices and value is not None:
                named = [v for v in value.split("|") if v.islower()]  # upper case: a placeholder
                wrong += [f"`{span}`: {v} is not a choice of {option}" for v in named if v not in action.choices]
    assert not wrong, "; ".join(wrong)


def test_every_compile_option_is_documented():
    """The README's option paragraph is where a user looks for what `compile` takes."""
    documented = {o for span in _spans() for o, _ in _options(span.replace("\\|", "|").split())}
    options = {o for a in SUBCOMMANDS["compile"]._actions for o in a.option_strings
               if o.startswith("--") and o != "--help"}
    missing = {o for o in options if o not in documented and not any(
        s in documented for s in _action([SUBCOMMANDS["compile"]], o).option_strings)}
    assert not missing, f"compile options the README never shows: {sorted(missing)}"


COMMANDS = [ln for ln in _spans() if re.search(rf"(^|/)eecc ({'|'.join(SUBCOMMANDS)}) \S", ln.split("&&")[-1])
            and not re.search(r"[\[|]|\.\.\.", ln.split("#")[0])]


def test_the_readme_has_runnable_commands():
    assert len(COMMANDS) >= 5 and any("--example kws" in c and "--quantize int8" in c for c in COMMANDS)


@pytest.mark.parametrize("line", COMMANDS)
def test_readme_commands_parse(line):
    """Commands written out (no [optional] parts or alternatives) parse as they stand."""
    tokens = shlex.split(line.split("#", 1)[0].split("&&")[-1])
    try:
        PARSER.parse_args(tokens[1:])
    except SystemExit as exc:
        pytest.fail(f"`{line}` does not parse (exit {exc.code})")
