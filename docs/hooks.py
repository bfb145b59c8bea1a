"""MkDocs hook: pages pull their text from the files that hold it, so nothing is
written twice.

Three directives, each an HTML comment on a line of its own:

- `<!-- readme: TITLE -->`: the README section under the heading `TITLE` (up to the
  next heading of the same or a higher level), with its links rewritten for the site.
- `<!-- output: PATH -->`: the text file `docs/PATH` as a code block (what a demo
  printed, recorded by `docs/record_demos.py`).
- `<!-- figures: DIR -->`: every PNG in `docs/DIR`, in name order.
"""

import posixpath
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
DIRECTIVE = re.compile(r"^<!-- (readme|output|figures): (.+?) -->$", re.M)
HEADING = re.compile(r"^(#{1,6}) (.+)$")

# README links that point outside the site, and where they go on it
LINKS = {
    "#benchmarks": "benchmarks.md",
    "benchmarks/RESULTS.md": "benchmarks.md",
}


def readme_section(title: str) -> str:
    """The body of the README section whose heading text is `title`."""
    lines = (ROOT / "README.md").read_text().splitlines()
    fenced = False
    start = level = None
    for i, line in enumerate(lines):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        match = None if fenced else HEADING.match(line)
        if match is None:
            continue
        if start is None and match.group(2).strip() == title:
            start, level = i + 1, len(match.group(1))
        elif start is not None and len(match.group(1)) <= level:
            return "\n".join(lines[start:i])
    if start is None:
        raise ValueError(f"README.md has no section titled {title!r}")
    return "\n".join(lines[start:])


def _relative(page_uri: str, target: str) -> str:
    return posixpath.relpath(target, posixpath.dirname(page_uri) or ".")


def _readme(title: str, page_uri: str) -> str:
    text = readme_section(title)
    # README links into docs/ (figures) become links relative to the page
    text = re.sub(r"\(docs/([^)]+)\)",
                  lambda m: "(" + _relative(page_uri, m.group(1)) + ")", text)
    for old, new in LINKS.items():
        text = text.replace(f"({old})", f"({_relative(page_uri, new)})")
    return text


def _output(path: str) -> str:
    text = (DOCS / path).read_text().rstrip()
    return f"```text\n{text}\n```"


def _figures(directory: str, page_uri: str) -> str:
    pngs = sorted((DOCS / directory).glob("*.png"))
    if not pngs:
        raise ValueError(f"docs/{directory} holds no figures; run docs/record_demos.py")
    return "\n\n".join(
        f"![{p.stem.replace('_', ' ')}]({_relative(page_uri, f'{directory}/{p.name}')})"
        for p in pngs)


def on_page_markdown(markdown, page, config, files):
    uri = page.file.src_uri

    def expand(match):
        kind, value = match.group(1), match.group(2).strip()
        if kind == "readme":
            return _readme(value, uri)
        if kind == "output":
            return _output(value)
        return _figures(value, uri)

    return DIRECTIVE.sub(expand, markdown)
