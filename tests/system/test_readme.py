"""The README's two commands survive Debian's and Ubuntu's own python3, which refuses `pip install` (PEP 668).

Run against a real externally managed interpreter (one with an EXTERNALLY-MANAGED file in its stdlib, as
Debian's /usr/bin/python3 has); skipped where there is none. The steps before `nox` run for real, in a scratch
directory, except that pip gets `--no-index`: no download, so the install of nox itself fails, but a PEP 668
refusal comes before any download, and that is what must not happen.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def externally_managed_python3() -> str | None:
    for candidate in ("/usr/bin/python3", shutil.which("python3")):
        if candidate and Path(candidate).exists():
            stdlib = subprocess.run(
                [candidate, "-c", "import sysconfig; print(sysconfig.get_path('stdlib'))"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
            if stdlib and (Path(stdlib) / "EXTERNALLY-MANAGED").exists():
                return candidate
    return None


def readme_commands() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", section)


def test_the_readme_has_two_commands_that_run_nox() -> None:
    commands = readme_commands()
    assert len(commands) == 2
    assert [shlex.split(c.split("&&")[-1])[-2:] for c in commands] == [["-s", "demo"], ["-s", "tests"]]


def test_the_readme_commands_install_nox_where_pep_668_allows_it(tmp_path: Path) -> None:
    python3 = externally_managed_python3()
    if python3 is None:
        pytest.skip("no externally managed python3 (PEP 668) on this machine")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python3").symlink_to(python3)
    for command in sorted(set(" && ".join(c.split("&&")[:-1]) for c in readme_commands())):
        steps = [shlex.split(step) for step in command.split("&&")]
        scratch = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        scratch.mkdir()
        for argv in steps:
            is_pip = Path(argv[0]).name.startswith("pip") or argv[1:3] == ["-m", "pip"]
            if is_pip:
                argv = [*argv, "--no-index", "--quiet"]
            ran = subprocess.run(
                argv,
                cwd=scratch,
                env={"PATH": f"{bindir}:/usr/bin:/bin", "HOME": str(tmp_path), "PIP_NO_CACHE_DIR": "1"},
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            output = ran.stdout + ran.stderr
            assert "externally-managed-environment" not in output, f"{command!r}: {output}"
            if not is_pip:
                assert ran.returncode == 0, f"{argv}: {output}"


DOCS = README.parent / "docs"


def test_readme_and_the_docs_index_link_every_docs_page() -> None:
    pages = sorted(p.name for p in DOCS.glob("*.md") if p.name != "index.md")
    readme = README.read_text(encoding="utf-8")
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    assert [p for p in pages if f"(docs/{p})" not in readme] == []
    assert [p for p in pages if f"({p})" not in index] == []


def test_readme_test_section_names_faketime() -> None:
    section = README.read_text(encoding="utf-8").split("## Two commands", 1)[1].split("\n## ", 1)[0]
    assert "libfaketime" in section and "`faketime`" in section


def test_docs_link_only_files_in_the_repository() -> None:
    for page in [README, *DOCS.glob("*.md")]:
        text = page.read_text(encoding="utf-8")
        assert "DESIGN.md" not in text, page
        for target in re.findall(r"\]\(([^)#:]+\.md)(?:#[^)]*)?\)", text):
            assert (page.parent / target).exists(), (
                f"{page.name} links {target}, which is not in the repository"
            )
