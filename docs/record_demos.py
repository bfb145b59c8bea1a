"""Record what each demo prints and draws, for its page of the documentation.

    python docs/record_demos.py [NAME ...]      # default: every demo, full size
    python docs/record_demos.py --readme        # the README blocks from the records

Each demo runs as a user runs it, `jaxode demo NAME --out docs/demos/NAME`; its
standard output goes to `docs/demos/NAME/output.txt` beside the PNG files it writes.
The demo pages show those files, and the README's block for the demo (between
`<!-- output of jaxode demo NAME ... -->` and `<!-- end of output -->`) is rewritten
from the same output, so the numbers on them are the ones measured, never typed.
"""

import subprocess
import sys
import time
from pathlib import Path

from jaxode.cli import DEMOS

DOCS = Path(__file__).resolve().parent
README = DOCS.parent / "README.md"
START = "<!-- output of jaxode demo {}: written by docs/record_demos.py -->"
END = "<!-- end of output -->"


def update_readme(name: str, output: str) -> bool:
    """Rewrite the README's block for demo `name` (if it has one) from its output."""
    text = README.read_text()
    start = START.format(name)
    if start not in text:
        return False
    head, rest = text.split(start, 1)
    tail = rest.split(END, 1)[1]
    shown = [line for line in output.splitlines() if not line.startswith("saved ")]
    block = "\n".join([start, "", "```text", *shown, "```", "", END])
    README.write_text(head + block + tail)
    return True


def record(name: str) -> None:
    out = DOCS / "demos" / name
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    start = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-m", "jaxode.cli", "demo", name, "--out", f"docs/demos/{name}"],
        cwd=DOCS.parent, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if run.returncode != 0:
        sys.exit(f"jaxode demo {name} failed:\n{run.stdout}\n{run.stderr[-3000:]}")
    output = (f"$ jaxode demo {name}\n{run.stdout.rstrip()}\n"
              f"({seconds:.0f} s wall on the machine that recorded it)\n")
    (out / "output.txt").write_text(output)
    readme = " and the README" if update_readme(name, output) else ""
    print(f"{name}: {seconds:.0f} s, {len(list(out.glob('*.png')))} figures{readme}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--readme"]:  # only rewrite the README from recorded outputs
        for name in DEMOS:
            path = DOCS / "demos" / name / "output.txt"
            if path.exists() and update_readme(name, path.read_text()):
                print(f"README: {name}")
        sys.exit(0)
    for name in sys.argv[1:] or list(DEMOS):
        record(name)
