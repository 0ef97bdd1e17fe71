"""The docs cannot drift from the code: README.md and docs/*.md are read as the code reads them.

- the losses table in docs/losses.md is what the loss registry prints;
- every relative link (and its #anchor) points at a file (and a heading) that exists;
- the README's two commands are the ones .ci/run runs, byte for byte;
- every `directalign ...` command shown in the pages named below parses with the current CLI, and for the
  commands that take config keys, its keys load into a valid config (unknown keys, keys of another command,
  values out of range and loss keys the loss does not read all fail here), and a command shown ending in an
  error still fails with that very message;
- every `from directalign... import ...` line of the Python shown still imports;
- the README's file tree names only paths that exist, and names every package of src/directalign.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from directalign.cli.demo import DEMO_CONFIG
from directalign.cli.main import build_parser
from directalign.cli.train import BUILTIN_CONFIG
from directalign.config import load_config, parse_cli_overrides
from directalign.losses.registry import DATA_KINDS, losses_table

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
# Pages whose shown commands are checked here; pages other engineers own join the list when they pass.
COMMAND_PAGES = [README] + [
    ROOT / "docs" / name
    for name in ("README.md", "data.md", "losses.md", "training.md", "evaluation.md", "quality.md",
                 "reward-models.md", "health.md", "sweeps.md", "performance.md", "reliability.md",
                 "onpolicy.md", "scaling.md", "annotation.md", "api.md", "ecosystem.md")
]
# Pages being written on other branches at the same time as this one: a link to one of them is accepted while
# it is absent. Empty this once they are merged (tests then hold every link to an existing file).
PAGES_IN_FLIGHT: set[str] = set()

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(text)]


def prose(text: str) -> str:
    """The text without its fenced blocks (links inside code are not links)."""
    return FENCE.sub("", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (but - and _), spaces to hyphens."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", prose(path.read_text()), re.M)}


# The losses table.


def test_losses_table_in_docs_is_the_registry_table():
    text = (ROOT / "docs" / "losses.md").read_text()
    match = re.search(r"<!-- losses_table[^>]*-->\n(.*?)\n<!-- /losses_table -->", text, re.S)
    assert match, "docs/losses.md has lost its <!-- losses_table --> ... <!-- /losses_table --> markers"
    # Paired and unpaired (what `train --help` prints) plus grouped (GRPO): every registered loss.
    expected = losses_table("paired", "unpaired", "grouped")
    assert expected == losses_table(*DATA_KINDS)
    assert match.group(1) == expected, "docs/losses.md: paste the output of losses_table() between the markers"


# Links.


def relative_links(path: Path) -> list[str]:
    return [t for t in LINK.findall(prose(path.read_text())) if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_a_file_that_exists(page):
    broken = []
    for target in relative_links(page):
        file_part, _, anchor = target.partition("#")
        resolved = (page.parent / file_part).resolve() if file_part else page
        name = str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(resolved)
        if not resolved.exists():
            if name not in PAGES_IN_FLIGHT:
                broken.append(f"{target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target} (no heading #{anchor} in {name})")
    assert not broken, f"{page.relative_to(ROOT)}: broken links: {broken}"


def test_the_link_checker_sees_links_and_anchors():
    # The checks above pass vacuously if the pattern finds nothing: make sure it finds what the README has.
    links = relative_links(README)
    assert any(t.startswith("docs/") for t in links)
    assert slug("Scaling out: several processes, sharding, several nodes") == (
        "scaling-out-several-processes-sharding-several-nodes"
    )


# The README's two commands.


def test_readme_commands_are_the_ones_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    setup = re.search(r"^(pip install .*&& directalign train) \|\| exit 1$", ci, re.M)
    assert setup, ".ci/run no longer has the setup + main job line"
    assert re.search(r"^python -m pytest -q$", ci, re.M)
    blocks = code_blocks(README.read_text())
    shell_lines = [line for lang, body in blocks if lang == "bash" for line in body.splitlines()]
    assert setup.group(1) in shell_lines
    assert "python -m pytest -q" in shell_lines


# Commands shown in the docs.

SHELL_STOP = {"|", ">", ">>", "2>&1", "&&", "||", ";", "&"}


def shown_commands(text: str) -> list[tuple[str, str | None]]:
    """Every shell command of a page that runs directalign, with the error it is shown to end in (None when it
    is shown without one): the lines of bash blocks, and the `$ ` lines of other blocks (console transcripts,
    whose following lines are that command's output), with backslash continuations joined."""
    commands: list[list] = []
    for lang, body in code_blocks(text):
        body = body.replace("\\\n", " ")
        transcript = lang not in ("bash", "sh", "shell")
        current = None
        for line in body.splitlines():
            if transcript and not line.startswith("$ "):
                if current is not None and line.startswith("error: ") and current[1] is None:
                    current[1] = line.removeprefix("error: ")
                continue
            line = line.removeprefix("$ ").strip()
            current = None
            if line and not line.startswith("#") and "directalign" in line:
                current = [line, None]
                commands.append(current)
    return [(c, e) for c, e in commands]


def directalign_argv(command: str) -> list[str] | None:
    """The arguments given to directalign in a shell line (after `directalign`, or `-m directalign`), up to
    the first redirection or next command; None when the line only mentions the name."""
    tokens = shlex.split(command, comments=True)
    for i, token in enumerate(tokens):
        after = tokens[i - 1] if i else ""
        if token == "directalign" and (i == 0 or after in SHELL_STOP | {"-m", "time", "nice"} or "=" in after):
            argv = []
            for t in tokens[i + 1:]:
                if t in SHELL_STOP or t.startswith((">", "2>")) or t == "directalign":
                    break  # (a second directalign: two commands side by side, as in a two-node example)
                if t != "...":  # an elided part of a longer command
                    argv.append(t)
            return argv[:-1] if argv[-1:] == ["-m"] else argv
    return None


def check_parses(argv: list[str]) -> None:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
    except SystemExit as err:
        raise AssertionError(f"argparse refused it (exit {err.code})") from err
    if not hasattr(args, "func"):
        raise AssertionError("no such command")
    if extra and not getattr(args, "accepts_extra", False):
        raise AssertionError(f"unrecognized arguments: {extra}")
    command = getattr(args, "config_command", None)
    if args.command == "sweep":
        command = "train"
    if command is None:
        return
    config = getattr(args, "config", None)
    if config is not None and not (ROOT / config).is_file():
        config = None  # a user's own file named in the text (my.yaml): its keys are not shown, the flags are
    if config is None and args.command == "train" and not any(t.split("=")[0] == "--data" for t in extra):
        config = BUILTIN_CONFIG
    if config is None and args.command == "demo":
        config = DEMO_CONFIG
    load_config(command, config, parse_cli_overrides(extra))


def all_shown() -> list[tuple[str, str, str | None]]:
    return [
        (str(page.relative_to(ROOT)), command, error)
        for page in COMMAND_PAGES
        if page.is_file()
        for command, error in shown_commands(page.read_text())
    ]


def test_the_command_extractor_finds_the_main_commands():
    shown = all_shown()
    commands = [c for _, c, _ in shown]
    assert any(c.endswith("&& directalign train") for c in commands)
    assert any(" directalign data inspect " in f" {c} " for c in commands)
    assert any(e and e.startswith("command line: unknown key") for _, _, e in shown)
    assert directalign_argv("python -m torch.distributed.run --nproc_per_node 2 -m directalign train --x 1") == [
        "train", "--x", "1"]
    assert directalign_argv("HF_HUB_OFFLINE=1 directalign data inspect x") == ["data", "inspect", "x"]
    assert directalign_argv("printf 'directalign' > f.txt") is None


@pytest.mark.parametrize(("page", "command", "error"), all_shown(), ids=lambda v: (v or "")[:80])
def test_every_shown_command_parses(page, command, error):
    """A command shown without an error parses and its keys load; a command shown ending in `error: ...` that
    fails while parsing fails with that very message (one that fails later, running, is not run here)."""
    argv = directalign_argv(command)
    if argv is None:
        pytest.skip("names directalign without running it")
    try:
        check_parses(argv)
    except Exception as err:  # noqa: BLE001 (the message is the point)
        if error is None:
            pytest.fail(f"{page}: `{command}` no longer parses: {err}")
        assert str(err) == error, f"{page}: `{command}` now fails with another message"


# Python shown in the docs.


def shown_imports() -> list[tuple[str, str]]:
    """Every `from directalign... import ...` line of the Python blocks (and python -c commands) of the pages."""
    found = []
    for page in COMMAND_PAGES:
        if page.is_file():
            for line in re.findall(r"^\s*(from directalign[\w.]* import [\w, ]+)\s*$", page.read_text(), re.M):
                found.append((str(page.relative_to(ROOT)), line.strip()))
    return found


@pytest.mark.parametrize(("page", "line"), shown_imports(), ids=lambda v: v[:80])
def test_every_shown_import_still_resolves(page, line):
    exec(line, {})  # noqa: S102 (a line of our own docs, importing our own package)


def test_the_import_extractor_finds_the_snippets():
    lines = [line for _, line in shown_imports()]
    assert "from directalign.losses import dpo_loss, simpo_loss" in lines
    assert any(line.startswith("from directalign.reward_models.stacked import") for line in lines)


# The README's file tree.


def readme_tree() -> list[str]:
    """The paths of the README's file tree: the first fenced block after the '## Files' heading, read as an
    indented tree (two spaces a level, folders end with /, one line per entry)."""
    text = README.read_text()
    section = text.split("\n## Files", 1)
    assert len(section) == 2, "README.md has no '## Files' section"
    block = code_blocks(section[1])[0][1]
    paths, stack = [], []
    for line in block.splitlines():
        if not line.strip():
            continue
        indent = (len(line) - len(line.lstrip(" "))) // 2
        name = line.strip().split()[0]
        assert re.fullmatch(r"[\w.+-][\w.+/-]*", name), f"README tree: {line!r} is not 'path  description'"
        stack[indent:] = [name]
        paths.append("".join(stack))
    return paths


def test_readme_tree_names_only_paths_that_exist():
    paths = readme_tree()
    assert len(paths) > 50
    missing = [p for p in paths if not (ROOT / p).exists()]
    assert not missing, f"README.md's file tree names paths that do not exist: {missing}"


def test_readme_tree_names_every_package_and_top_level_folder():
    named = set(readme_tree())
    src = ROOT / "src" / "directalign"
    packages = {f"src/directalign/{p.name}/" for p in src.iterdir() if p.is_dir() and p.name != "__pycache__"}
    folders = {f"{name}/" for name in ("benchmarks", "docs", "examples", "tests") if (ROOT / name).is_dir()}
    missing = sorted((packages | folders) - named)
    assert not missing, f"README.md's file tree leaves out {missing}"
