"""The manual cannot drift from the code: every relative link, image and #anchor in README.md and docs/ resolves,
and every documented command of an entry point composes (Hydra's compose API, as `--cfg job` would), untrained."""

from __future__ import annotations

import functools
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
DOCS = ROOT / "docs"
IMAGES = DOCS / "images"
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]

# The Hydra entry points a documented command may start with, and the config each composes.
HYDRA_ENTRY_POINTS = {
    ("python", "train.py"): "train",
    ("python", "benchmark.py"): "benchmark",
    ("python", "-m", "sepdense.evaluate"): "evaluate",
    ("python", "-m", "sepdense.export"): "export",
}
REPORT_ENTRY_POINT = ("python", "-m", "sepdense.report")
COMMAND_START = re.compile(r"python (train\.py|benchmark\.py|-m sepdense\.)")
# Hydra's command-line flags that documented commands use; each takes no value except --cfg.
HYDRA_FLAGS = {"-m", "--multirun", "--help", "-h", "--resolve", "--info"}
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_SOURCE = re.compile(r"<(?:img|a)\b[^>]*?\b(?:src|href)=\"([^\"]+)\"")
IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)")
PLACEHOLDER = re.compile(r"<[^<>]*>")  # <date_time>, <run dir>: any value composes where a user's would
SEPARATORS = {"&&", "||", ";", "|", "&"}


@dataclass(frozen=True)
class Command:
    page: Path
    line: int
    text: str
    tokens: tuple[str, ...]

    def __str__(self) -> str:
        return f"{shown(self.page)}:{self.line}"


def shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def prose_and_code(page: Path) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """The page's lines outside fenced blocks and inside them, each with its line number."""
    prose, code, fenced = [], [], False
    for number, line in enumerate(page.read_text().splitlines(), start=1):
        if FENCE.match(line):
            fenced = not fenced
        elif fenced:
            code.append((number, line))
        else:
            prose.append((number, line))
    return prose, code


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text lower-cased, all but letters, digits, '_', '-' and spaces
    dropped, each space a '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link shows its text
    text = re.sub(r"[`*]", "", text)  # code and emphasis marks are not text
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading's anchor; a repeated heading gets -1, -2, ... as on GitHub."""
    found: set[str] = set()
    for _, line in prose_and_code(page)[0]:
        match = HEADING.match(line)
        if match:
            slug = github_slug(match.group(2))
            unique, n = slug, 0
            while unique in found:
                n += 1
                unique = f"{slug}-{n}"
            found.add(unique)
    return found


def link_targets(page: Path) -> Iterator[tuple[int, str]]:
    """Every link and image target in the page's prose (code spans and fenced blocks are not links)."""
    for number, line in prose_and_code(page)[0]:
        text = re.sub(r"`[^`]*`", "", line)
        for pattern in (LINK, HTML_SOURCE):
            for match in pattern.finditer(text):
                yield number, match.group(1)


def broken_links(page: Path) -> list[str]:
    """Relative links whose file does not exist, and #anchors that name no heading of their page."""
    problems = []
    for number, target in link_targets(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):
            continue  # http(s), mailto: outside the repository
        path_part, _, fragment = target.partition("#")
        file = (page.parent / path_part).resolve() if path_part else page
        where = f"{shown(page)}:{number}: {target}"
        if not file.exists():
            problems.append(f"{where}: no such file")
        elif fragment and (file.suffix != ".md" or fragment not in anchors(file)):
            problems.append(f"{where}: no heading #{fragment} in {shown(file)}")
    return problems


def commands(page: Path) -> Iterator[Command]:
    """Every command in a fenced block that runs an entry point, continuation lines joined, comments dropped, and
    placeholders (<date_time>, <run dir>) given a value; a command may follow others after '&&', ';' or '|'."""
    joined: list[tuple[int, str]] = []
    for number, line in prose_and_code(page)[1]:
        if joined and joined[-1][1].endswith("\\"):
            joined[-1] = (joined[-1][0], joined[-1][1][:-1] + " " + line.strip())
        else:
            joined.append((number, line.strip()))
    for number, line in joined:
        if not COMMAND_START.search(line):
            continue  # log excerpts and other output are not shell
        lexer = shlex.shlex(PLACEHOLDER.sub("x", line), posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        part: list[str] = []
        for token in [*lexer, ";"]:
            if token not in SEPARATORS:
                part.append(token)
                continue
            if part[:1] == ["python"] and COMMAND_START.match(" ".join(part)):
                yield Command(page, number, line, tuple(part))
            part = []


DOCUMENTED = [command for page in PAGES for command in commands(page)]


def hydra_overrides(tokens: list[str]) -> tuple[list[str], bool]:
    """The overrides of a Hydra command line and whether it sweeps (-m); a flag Hydra lacks fails the test."""
    overrides, multirun, i = [], False, 0
    while i < len(tokens):
        token = tokens[i]
        if token in ("--cfg", "-c"):
            i += 1  # its value: job, hydra or all
        elif token in ("-m", "--multirun"):
            multirun = True
        elif token.startswith("-"):
            assert token in HYDRA_FLAGS, f"{token} is not a Hydra flag"
        else:
            overrides.append(token)
        i += 1
    return overrides, multirun


@functools.cache
def compose(config_name: str, overrides: tuple[str, ...], run_mode: RunMode) -> DictConfig:
    """Hydra's composition of one command line (the same line in several pages is composed once)."""
    hydra = GlobalHydra.instance().hydra
    assert hydra is not None
    return hydra.compose_config(config_name, list(overrides), run_mode=run_mode)


def compose_every_job(config_name: str, overrides: list[str], multirun: bool) -> None:
    """Compose the config as the command would: once, or for a sweep once as a sweep (its launcher and sweeper)
    and then as jobs that together take every value of every swept key (the i-th job the i-th value of each,
    cycling the shorter lists): each value is composed once, not the whole product."""
    sweep_cfg = compose(config_name, tuple(overrides), RunMode.MULTIRUN if multirun else RunMode.RUN)
    if not multirun:
        return
    parsed = OverridesParser.create().parse_overrides(overrides)
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    swept = {o.get_key_element(): list(o.sweep_string_iterator()) for o in parsed if o.is_sweep_override()}
    if sweep_cfg.hydra.sweeper._target_.endswith("BasicSweeper"):  # other sweepers' params are search spaces
        given = {o.get_key_element() for o in parsed}
        for key, value in (sweep_cfg.hydra.sweeper.params or {}).items():
            if key not in given:
                (param,) = OverridesParser.create().parse_overrides([f"{key}={value}"])
                swept[key] = list(param.sweep_string_iterator()) if param.is_sweep_override() else [str(value)]
    for i in range(max((len(values) for values in swept.values()), default=0)):
        job = fixed + [f"{key}={values[i % len(values)]}" for key, values in swept.items()]
        compose(config_name, tuple(job), RunMode.RUN)


def check_report_command(arguments: list[str]) -> None:
    """`python -m sepdense.report <run-or-sweep-dir> [--publish <folder>]` takes one directory and one option (its
    argparse usage); it has no config to compose, and importing it would load the whole report stack, so its module
    file is checked."""
    main = ROOT / "src" / "sepdense" / "report" / "__main__.py"
    assert main.is_file()
    if arguments[1:2] == ["--publish"]:
        assert len(arguments) == 3 and '"--publish"' in main.read_text(), f"expected --publish <folder>: {arguments}"
        arguments = arguments[:1]
    assert len(arguments) == 1 and not arguments[0].startswith("-"), f"expected one run or sweep directory: {arguments}"


@pytest.fixture(scope="module")
def hydra_conf() -> Iterator[None]:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        yield


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_link_image_and_anchor_resolves(page: Path) -> None:
    assert broken_links(page) == []


def test_every_figure_in_docs_images_is_shown_by_a_page() -> None:
    displayed = {
        (page.parent / target).resolve()
        for page in PAGES
        for _, line in prose_and_code(page)[0]
        for target in IMAGE.findall(re.sub(r"`[^`]*`", "", line))
    }
    unused = [path.relative_to(ROOT) for path in sorted(IMAGES.iterdir()) if path.resolve() not in displayed]
    assert unused == []


@pytest.mark.parametrize("command", DOCUMENTED, ids=str)
def test_every_documented_command_composes(command: Command, hydra_conf: None) -> None:
    tokens = list(command.tokens)
    if tuple(tokens[:3]) == REPORT_ENTRY_POINT:
        check_report_command(tokens[3:])
        return
    entry = next((key for key in HYDRA_ENTRY_POINTS if tuple(tokens[: len(key)]) == key), None)
    known = ", ".join(" ".join(key) for key in [*HYDRA_ENTRY_POINTS, REPORT_ENTRY_POINT])
    assert entry is not None, f"{command}: `{command.text}` runs no entry point ({known})"
    overrides, multirun = hydra_overrides(tokens[len(entry) :])
    try:
        compose_every_job(HYDRA_ENTRY_POINTS[entry], overrides, multirun)
    except Exception as error:  # Hydra's composition and parse errors have no common base
        pytest.fail(f"{command}: `{command.text}` does not compose: {type(error).__name__}: {error}")


def test_the_checks_catch_what_they_are_for(tmp_path: Path, hydra_conf: None) -> None:
    """A broken file link, a missing anchor, a mistyped override and a bad value late in a sweep each fail; headings
    slug as on GitHub."""
    assert github_slug("Deployed cost (ONNX Runtime)") == "deployed-cost-onnx-runtime"
    assert github_slug("`model.stem` and the 3×3 stem") == "modelstem-and-the-33-stem"
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[ok](#title) [gone](missing.md) [nowhere](#no-such-heading)\n")
    assert broken_links(page) == [
        "page.md:3: missing.md: no such file",
        "page.md:3: #no-such-heading: no heading #no-such-heading in page.md",
    ]
    with pytest.raises(Exception, match=r"model\.cnv"):
        compose_every_job("train", ["model.cnv=separable"], multirun=False)
    with pytest.raises(Exception, match=r"experiment/nope"):
        compose_every_job("train", ["experiment=nope", "seed=0,1"], multirun=True)
    with pytest.raises(Exception, match=r"data/nope"):
        compose_every_job("train", ["data=cifar10,imagefolder,nope", "seed=0,1"], multirun=True)


def test_the_manual_documents_every_entry_point() -> None:
    """The parser finds the commands: each entry point is shown at least once in README.md or docs/."""
    starts = {command.tokens[:3] for command in DOCUMENTED}
    for entry in [*HYDRA_ENTRY_POINTS, REPORT_ENTRY_POINT]:
        assert any(start[: len(entry)] == entry for start in starts), " ".join(entry)
