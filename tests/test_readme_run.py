"""Every command the README shows, run as a user would paste it, against a live service.

- Blocks: README.md's fenced ```bash (also sh, shell) and ```python (py) blocks, grouped by `## ` section. A block
  that must not run here (it starts the service itself, installs the project) carries, on the line just before its
  fence, `<!-- readme-test: skip — <reason> -->`; every other bash and python block runs. A skip without a reason,
  a skip not followed by a block and a fence without a language fail. (tests/test_readme.py parses the `ganforge`
  command lines of every block, skipped ones included.)
- Per section, one `bash` process with `set -euo pipefail` runs its blocks in order, so variables such as JOB carry
  within a section (not between sections); a python block runs at its place in that order with the venv's python.
  cwd is an empty temporary directory per section with `.venv` linked to the checkout's (the README's commands are
  typed in the checkout); PATH has the `curl` below, then `.venv/bin`, first; HOME is a temporary directory;
  GANFORGE_URL is the service's.
- The one rewriting of the commands: `localhost:8000` and `127.0.0.1:8000` (with or without `http://`) become the
  test service's `127.0.0.1:<port>`.
- A `curl` first on PATH runs the real curl with the same arguments and records each answer's HTTP status: an
  answer of 400 or more fails the section, since `curl -s` itself exits 0 on it.
- The service: an API, one training worker and one generate worker on the embedded default (SQLite, file-system
  broker) without API keys, as `make run` (`ganforge up`) starts it. The whole README runs in a few minutes on a
  2-core CPU; that is the README's promise too.

- Every file the README links to (`[...](path)`, images too) is in the checkout.

On a failure the test prints the failing block, its output, every HTTP answer and the service's logs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import api_only
from tests.service import ROOT, Service

README = ROOT / "README.md"
VENV_BIN = ROOT / ".venv" / "bin"
BASH = {"bash", "sh", "shell"}
PYTHON = {"python", "py"}
FENCE = re.compile(r"^```(.*)$")
SKIP = re.compile(r"^<!--\s*readme-test:\s*skip\b\s*(?:[—–:-]+\s*)?(.*?)\s*-->\s*$")
MARKER = re.compile(r"^<!--\s*readme-test\b")
SERVICE_ADDRESS = re.compile(r"(?<![\w.-])(?:localhost|127\.0\.0\.1):8000(?!\d)")
SECTION_SECONDS = 300
HTTP_MARK = "@@readme-test-http"
# Runs the real curl unchanged but for -w, which writes the answer's status to stderr; the shim moves that line to
# the log. (A command's own -w, given after ours, wins: then its requests go unrecorded.)
CURL_SHIM = f"""#!/usr/bin/env bash
err=$(mktemp)
"$READMETEST_CURL" -w '%{{stderr}}{HTTP_MARK} %{{http_code}} %{{method}} %{{url_effective}}\\n' "$@" 2>"$err"
rc=$?
grep -a '^{HTTP_MARK} ' "$err" >>"$READMETEST_LOG" || true
grep -av '^{HTTP_MARK} ' "$err" >&2 || true
rm -f "$err"
exit $rc
"""


@dataclass
class Block:
    line: int  # 1-based line of the opening fence
    language: str
    text: str
    skip: str | None = None  # the reason, when the block is marked skip

    @property
    def runs(self) -> bool:
        return self.skip is None and self.language in BASH | PYTHON


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)

    @property
    def runnable(self) -> list[Block]:
        return [b for b in self.blocks if b.runs]


def parse(markdown: str) -> tuple[list[Section], list[str]]:
    """The README's `## ` sections with their fenced blocks, and the problems found (one line each)."""
    sections = [Section("(before the first section)")]
    problems: list[str] = []
    lines = markdown.splitlines()
    pending_skip: tuple[int, str] | None = None
    index = 0
    while index < len(lines):
        line = lines[index]
        fence = FENCE.match(line)
        if fence:
            language = fence.group(1).strip().split(" ")[0].lower()
            start = index
            index += 1
            while index < len(lines) and not lines[index].startswith("```"):
                index += 1
            if index == len(lines):
                problems.append(f"line {start + 1}: a fence that is never closed")
            block = Block(start + 1, language, "\n".join(lines[start + 1 : index]) + "\n")
            if not language:
                problems.append(f"line {start + 1}: a fence without a language (```bash, ```python, ```yaml, ...)")
            if pending_skip is not None:
                block.skip = pending_skip[1]
                if language not in BASH | PYTHON:
                    problems.append(f"line {pending_skip[0]}: a skip before a ```{language} block, which never runs")
                pending_skip = None
            sections[-1].blocks.append(block)
        elif line.startswith("## "):
            sections.append(Section(line[3:].strip()))
        elif MARKER.match(line):
            skip = SKIP.match(line)
            if skip is None:
                problems.append(f"line {index + 1}: not `<!-- readme-test: skip — <reason> -->`: {line}")
            elif not skip.group(1):
                problems.append(f"line {index + 1}: a skip needs its reason: {line}")
            elif index + 1 >= len(lines) or not FENCE.match(lines[index + 1]):
                problems.append(f"line {index + 1}: a skip must be on the line just before a block's fence")
            else:
                pending_skip = (index + 1, skip.group(1))
        index += 1
    return [s for s in sections if s.blocks], problems


SECTIONS, PROBLEMS = parse(README.read_text())


def test_every_command_block_runs_or_says_why_not() -> None:
    assert not PROBLEMS, "README.md:\n" + "\n".join(PROBLEMS)
    api = next(s for s in SECTIONS if s.title == "The API in a few lines")
    # the parser finds what it must run: the API section's curl commands, none of them skipped
    assert api.runnable and all(b.runs for b in api.blocks), api
    assert sum("curl " in b.text for b in api.runnable) >= 2
    for section in SECTIONS:
        for block in section.blocks:
            assert block.skip is None or block.skip.strip(), block


def test_every_file_the_readme_links_to_is_in_the_checkout() -> None:
    # links and images by relative path (an http(s) or #anchor target is not a file of ours)
    targets = re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", README.read_text())
    local = [target.split("#")[0] for target in targets if not re.match(r"[a-z]+:|#", target)]
    assert local, targets
    missing = [target for target in local if not (ROOT / target).is_file()]
    assert not missing, f"README.md links to files the checkout lacks: {missing}"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """API, one worker and one generate worker on the embedded default, no API keys: what `make run` starts."""
    with api_only("embedded", tmp_path_factory.mktemp("readme-service"), GANFORGE_API_KEYS="") as service:
        generate = service.start_generate_worker(wait=False)  # both workers start at once
        service.start_worker()
        service.wait_generate_worker(generate)
        yield service


def script_for(section: Section, port: int, blocks_dir: Path) -> str:
    """One bash script: each block in order, after a marker line naming it (on stdout and in the HTTP log)."""
    parts = ["set -euo pipefail"]
    for number, block in enumerate(section.runnable):
        text = SERVICE_ADDRESS.sub(f"127.0.0.1:{port}", block.text)
        parts.append(
            f"printf '\\n@@readme-block {number}@@\\n'; "
            f'printf \'@@readme-block {number}@@\\n@@readme-at %s\\n\' "$SECONDS" >>"$READMETEST_LOG"'
        )
        if block.language in PYTHON:
            path = blocks_dir / f"block-{number}.py"
            path.write_text(text)
            parts.append(f"{VENV_BIN / 'python'} {path}")
        else:
            parts.append(text)
    parts.append(
        "printf '\\n@@readme-done@@\\n'; "
        'printf \'@@readme-block -1@@\\n@@readme-at %s\\n\' "$SECONDS" >>"$READMETEST_LOG"'
    )
    return "\n".join(parts) + "\n"


def split_by_block(text: str) -> dict[int, str]:
    """Output (or the HTTP log) per block number, from the marker lines the script writes (-1: after the last)."""
    chunks: dict[int, str] = {}
    current: int | None = None  # before the first marker: bash's own lines, kept with no block
    for line in text.splitlines(keepends=True):
        marker = re.fullmatch(r"@@readme-block (-?\d+)@@\n?", line)
        if marker:
            current = int(marker.group(1))
            chunks[current] = ""
        elif current is not None:
            chunks[current] += line
    return chunks


def report(section: Section, what: str, number: int, output: str, http_log: str, service: Service) -> str:
    block = section.runnable[number] if 0 <= number < len(section.runnable) else None
    shown = f"README.md line {block.line}, ```{block.language}:\n{block.text}" if block else "(no block)"
    return (
        f"{what} in README section {section.title!r}, {shown}\n--- its output:\n{output[-6000:]}\n"
        f"--- HTTP answers of the section:\n{http_log[-4000:]}\n--- service logs:\n{service.logs()[-6000:]}"
    )


def run_section(section: Section, service: Service, tmp_path: Path) -> str | None:
    """Run the section's blocks as described above; None when all ran, else why not (block, output, answers, logs)."""
    work, home, tools = tmp_path / "work", tmp_path / "home", tmp_path / "tools"
    for folder in (work, home, tools):
        folder.mkdir(parents=True)
    (work / ".venv").symlink_to(ROOT / ".venv")
    real_curl = shutil.which("curl")
    assert real_curl is not None, "the README's commands need curl"
    (tools / "curl").write_text(CURL_SHIM)
    (tools / "curl").chmod(0o755)
    http_log = tmp_path / "http.log"
    http_log.touch()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GANFORGE_", "VIRTUAL_ENV"))}
    env.update(
        PATH=f"{tools}:{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}",
        HOME=str(home),
        GANFORGE_URL=service.url,
        READMETEST_CURL=real_curl,
        READMETEST_LOG=str(http_log),
        OMP_NUM_THREADS="1",
    )
    script = script_for(section, service.port, tmp_path)
    started = time.monotonic()
    try:
        result = subprocess.run(
            ["bash", "-c", script],
            cwd=work,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=SECTION_SECONDS,
        )
        output, returncode = result.stdout, result.returncode
    except subprocess.TimeoutExpired as exc:
        output = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        returncode = None
    seconds = time.monotonic() - started
    log = http_log.read_text()
    outputs, answers = split_by_block(output), split_by_block(log)
    print(f"README section {section.title!r}: {len(section.runnable)} block(s) in {seconds:.1f} s")
    clock = {n: int(m.group(1)) for n, text in answers.items() if (m := re.search(r"@@readme-at (\d+)", text))}
    for number in sorted(n for n in clock if n >= 0):
        ends = min((at for n, at in clock.items() if n < 0 or n > number), default=None)
        took = f"{ends - clock[number]} s" if ends is not None else "did not finish"
        print(f"  block at README.md line {section.runnable[number].line}: {took}")
    last = max(outputs, default=-1)
    if returncode is None:
        return report(section, f"timed out after {SECTION_SECONDS} s", last, outputs.get(last, ""), log, service)
    if returncode != 0 or "@@readme-done@@" not in output:
        return report(section, f"exit status {returncode}", last, outputs.get(last, output), log, service)
    for number, lines in answers.items():
        failed = [line for line in lines.splitlines() if re.match(rf"{HTTP_MARK} ([45]\d\d|000) ", line)]
        if failed:
            return report(section, "an HTTP error answer: " + "; ".join(failed), number, outputs[number], log, service)
    if HTTP_MARK not in log and "curl" in script:
        return "the curl shim recorded no answer:\n" + output
    return None


RUNNABLE = [s for s in SECTIONS if s.runnable]


@pytest.mark.slow
@pytest.mark.timeout(SECTION_SECONDS + 120)
@pytest.mark.parametrize("section", RUNNABLE, ids=[s.title for s in RUNNABLE])
def test_the_sections_commands_run_against_a_live_service(section: Section, live: Service, tmp_path: Path) -> None:
    failure = run_section(section, live, tmp_path)
    if failure:
        pytest.fail(failure)


def test_the_parser_finds_what_a_readme_gets_wrong() -> None:
    markdown = """# t
```bash
echo before any section
```
## One
<!-- readme-test: skip -->
```bash
make run
```
<!-- readme-test: skip — starts the service -->

```bash
make run
```
```
no language
```
<!-- readme-test: skip — a reason -->
```yaml
a: 1
```
<!-- readme-test skip: the wrong shape -->
```python
print("runs")
```
"""
    sections, problems = parse(markdown)
    assert [s.title for s in sections] == ["(before the first section)", "One"]
    assert [(b.line, b.language, b.skip) for b in sections[1].runnable] == [
        (7, "bash", None),
        (12, "bash", None),
        (23, "python", None),
    ]
    assert [p.split(":")[0] for p in problems] == ["line 6", "line 10", "line 15", "line 18", "line 22"], problems


@pytest.mark.slow
def test_a_failing_command_an_error_answer_and_a_missing_file_each_fail_their_section(
    live: Service, tmp_path: Path
) -> None:
    cases = {
        "answer": ("curl -s localhost:8000/v1/jobs/no-such-job\necho after\n", "an HTTP error answer: "),
        "fail": ("true\ncurl -sf localhost:8000/v1/jobs/no-such-job/samples/3000.png -o s.png\n", "exit status 22"),
        "file": ("curl -s -XPOST localhost:8000/v1/datasets -F file=@faces.zip -F name=faces\n", "exit status 26"),
        "unset": ('curl -s "localhost:8000/v1/jobs/$JOB"\n', "exit status 1"),
        "python": ("raise SystemExit('from python')\n", "exit status 1"),
    }
    for name, (text, expected) in cases.items():
        language = "python" if name == "python" else "bash"
        section = Section(name, [Block(1, "bash", "echo first\n"), Block(5, language, text)])
        failure = run_section(section, live, tmp_path / name)
        assert failure is not None and failure.startswith(expected), (name, failure)
        assert f"README.md line 5, ```{language}:\n{text}" in failure, (name, failure)
