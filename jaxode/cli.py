"""The `jaxode` command: `jaxode demo NAME`, `jaxode bench [NAME|all]`."""

import argparse
import ast
import datetime
import importlib
import importlib.metadata
import importlib.util
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

# name -> (module under jaxode.demos, one-line description)
DEMOS: dict[str, tuple[str, str]] = {
    "simulate": ("simulate", "the two-species competition model as an RNN and "
                 "adaptively"),
    "sine": ("sine", "Elman RNN and LSTM forecast a noisy sine, one step and 80 "
             "steps ahead"),
    "bptt": ("bptt", "backprop through time by hand vs autodiff, truncation "
             "windows, vanishing and exploding gradients"),
    "odenet": ("odenet", "ResNet, RK-Net, ODE-Net and MLP on 8x8 digits: error, "
               "parameters, memory, NFE"),
    "cnf": ("cnf", "a continuous normalising flow learns a toy 2-D density"),
    "lotka-volterra": ("lotka_volterra", "recover the competition model's six "
                       "parameters from seven observations (jaxode.fit)"),
    "lynx-hare": ("lynx_hare", "predator-prey model fitted to the Hudson's Bay "
                  "pelts 1900-1920: log-normal noise, profiles"),
    "flu": ("flu", "SIR fitted to the 1978 boarding-school influenza outbreak: "
            "normal vs negative-binomial noise"),
    "petab": ("petab", "Boehm et al. 2014 JAK2/STAT5 model read from PEtab, "
              "fitted from 20 starts"),
}

_VERSIONS = ("jax", "jaxlib", "diffrax", "equinox", "optax", "numpy", "torch",
             "torchdiffeq", "scipy")


def _version() -> str:
    try:
        return importlib.metadata.version("jaxode")
    except importlib.metadata.PackageNotFoundError:  # a source tree, not installed
        return "(not installed)"


def benchmarks_dir() -> Path:
    """`benchmarks/` of the source tree this package runs from (a git checkout,
    installed with `pip install -e .`)."""
    return Path(__file__).resolve().parent.parent / "benchmarks"


def bench_names(directory: Path) -> list[str]:
    """Benchmark names: the `*.py` scripts of `directory`, without `.py`."""
    return sorted(p.stem for p in directory.glob("*.py") if not p.name.startswith("_"))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxode",
        description="jaxode: differentiable simulation in JAX. An RNN and an ODE "
        "solver are the same step function.",
        epilog="Start with `jaxode demo simulate --quick`, then "
        "`jaxode demo NAME --help` or `jaxode bench --help`.",
    )
    parser.add_argument("--version", action="version",
                        version=f"jaxode {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="run a demo: prints its results and saves its figures",
        description="Run a demo: it prints a table of results and saves its figures "
        "as PNG files in --out. Available demos:\n" + "\n".join(
            f"  {name:<16}{desc}" for name, (_, desc) in DEMOS.items()),
        epilog="example: jaxode demo simulate --quick --out figures",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("name", metavar="NAME", nargs="?",
                      help=f"one of: {', '.join(DEMOS)}")
    _demo_options(demo)

    bench = sub.add_parser(
        "bench",
        help="run benchmark scripts and write benchmarks/RESULTS.md",
        description="Run the scripts in benchmarks/ (each in its own process, "
        "jaxode and its peer timed in that process), print their output, and "
        "write their result rows, the machine, the versions, the date and the load "
        "to a markdown file; running one NAME replaces that script's rows and keeps "
        "the others'. Needs a source checkout: `git clone` the repository and "
        "`pip install -e '.[bench]'` (torch and torchdiffeq are the peers).",
        epilog="examples: jaxode bench all --quick (a smoke run in a minute or "
        "two); jaxode bench ensemble_scaling",
    )
    names = bench_names(benchmarks_dir()) if benchmarks_dir().is_dir() else []
    bench.add_argument("name", metavar="NAME", nargs="?", default="all",
                       help="a benchmark (a file name in benchmarks/ without .py)"
                       + (f": one of {', '.join(names)};" if names else ",")
                       + " or `all` (default)")
    bench.add_argument("--quick", action="store_true",
                       help="pass --quick to each script: tiny sizes, a smoke run "
                       "whose timings are not meaningful")
    bench.add_argument("--results", type=Path, default=None,
                       help="where to write the markdown results "
                       "(default: benchmarks/RESULTS.md)")
    bench.add_argument("--dir", type=Path, default=None,
                       help="the benchmarks directory (default: benchmarks/ of "
                       "the source tree jaxode is installed from)")
    return parser


def _demo_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("out"),
                        help="directory for the figures, created if missing "
                        "(default: ./out)")
    parser.add_argument("--quick", action="store_true",
                        help="a short run (fewer steps and smaller sizes), well under "
                        "a minute")


def _demo_help(name: str) -> str:
    """The help of one demo: its module's docstring (read without importing it, so
    it shows in an install without the demos' extras) and its options."""
    spec = importlib.util.find_spec(f"jaxode.demos.{DEMOS[name][0]}")
    doc = ast.get_docstring(ast.parse(Path(spec.origin).read_text(encoding="utf-8")))
    parser = argparse.ArgumentParser(
        prog=f"jaxode demo {name}", description=doc or DEMOS[name][1],
        epilog=f"example: jaxode demo {name} --quick --out figures")
    _demo_options(parser)
    _demo_extra_options(name, parser)
    return parser.format_help()


def _demo_extra_options(name: str, parser: argparse.ArgumentParser) -> None:
    """The options a demo adds to `--out` and `--quick` (its module's
    `add_arguments(parser)`, when it has one and its extras are installed)."""
    try:
        module = importlib.import_module(f"jaxode.demos.{DEMOS[name][0]}")
    except ImportError:
        return
    hook = getattr(module, "add_arguments", None)
    if hook is not None:
        hook(parser)


def _fail(message: str) -> int:
    print(f"jaxode: error: {message}", file=sys.stderr)
    return 2


def _table_rows(output: str) -> list[str]:
    """The data rows of the markdown tables in a script's output (header rows,
    the ones followed by a `|---|` separator, and separators are left out)."""
    lines = [ln.strip() for ln in output.splitlines()]
    is_row = [ln.startswith("|") and ln.endswith("|") and len(ln) > 1 for ln in lines]
    is_sep = [r and set(ln) <= set("|-: ") for r, ln in zip(is_row, lines)]
    rows = []
    for i, ln in enumerate(lines):
        header = i + 1 < len(lines) and is_sep[i + 1]
        if is_row[i] and not is_sep[i] and not header:
            rows.append(ln)
    return rows


def _run_script(path: Path, quick: bool) -> tuple[int, str, float]:
    """Run one benchmark script, echo its output live, return (code, output, s)."""
    cmd = [sys.executable, str(path)] + (["--quick"] if quick else [])
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=path.parent.parent, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = []
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write("    " + line)
        sys.stdout.flush()
        out.append(line)
    code = proc.wait()
    return code, "".join(out), time.perf_counter() - start


def _machine() -> list[str]:
    try:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "unknown"
    cpu = platform.processor() or platform.machine()
    try:  # the model name is more telling than the architecture on Linux
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return [f"- machine: {platform.platform()}, {cpu}, {os.cpu_count()} logical CPUs",
            f"- load average (1, 5, 15 min) at the start: {load}",
            f"- python {platform.python_version()}"]


def _versions() -> str:
    parts = []
    for name in _VERSIONS:
        try:
            parts.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            parts.append(f"{name} (not installed)")
    return "- versions: " + ", ".join(parts)


def _previous_results(path: Path, keep: list[str]) -> tuple[dict, dict]:
    """Result rows and status lines of the scripts in `keep` from an earlier
    RESULTS.md, so that running one benchmark does not drop the others' figures."""
    rows: dict[str, list[str]] = {}
    status: dict[str, str] = {}
    if not path.exists():
        return rows, status
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or cells[0] not in keep:
            continue
        if len(cells) == 7 and (cells[1] == "ok" or cells[1].startswith("FAILED")):
            # | script | status | rows | wall time | run at | load average | note |
            status[cells[0]] = line
        else:
            rows.setdefault(cells[0], []).append(line)
    return rows, status


def _bench(ns: argparse.Namespace) -> int:
    directory = (ns.dir or benchmarks_dir()).resolve()
    if not directory.is_dir():
        return _fail(
            f"no benchmarks directory at {directory}; `jaxode bench` runs the "
            "scripts of a source checkout (git clone the repository, then "
            "pip install -e '.[bench]')")
    names = bench_names(directory)
    if not names:
        return _fail(f"no benchmark scripts (*.py) in {directory}")
    if ns.name != "all" and ns.name not in names:
        return _fail(f"unknown benchmark {ns.name!r}; valid benchmarks: all, "
                     f"{', '.join(names)}")
    chosen = names if ns.name == "all" else [ns.name]
    results = ns.results or directory / "RESULTS.md"
    rows, status = _previous_results(results, keep=[n for n in names if n not in chosen])
    started = datetime.datetime.now(datetime.timezone.utc)
    header = _machine() + [_versions()]
    for i, name in enumerate(chosen, 1):
        print(f"[{i}/{len(chosen)}] benchmarks/{name}.py"
              + (" --quick" if ns.quick else ""), flush=True)
        load = f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "?"
        when = datetime.datetime.now(datetime.timezone.utc)
        code, output, seconds = _run_script(directory / f"{name}.py", ns.quick)
        found = _table_rows(output)
        rows[name] = [f"| {name} {row}" for row in found]
        verdict = "ok" if code == 0 else f"FAILED (exit code {code})"
        status[name] = (f"| {name} | {verdict} | {len(found)} | {seconds:.0f} | "
                        f"{when:%Y-%m-%d %H:%M} | {load} | "
                        f"{'quick' if ns.quick else ''} |")
        print(f"[{i}/{len(chosen)}] {name}: {verdict}, {len(found)} result rows, "
              f"{seconds:.0f} s", flush=True)
    command = "jaxode bench " + ns.name + (" --quick" if ns.quick else "")
    order = [n for n in names if n in status]
    text = [
        "# Benchmark results",
        "",
        f"Last written by `{command}` on {started:%Y-%m-%d %H:%M} UTC"
        + (" (a --quick smoke run: tiny sizes, timings not meaningful)" if ns.quick
           else "") + "; rows of scripts not run then are kept from earlier runs "
        "(see when each ran, and the load average then, in the second table).",
        "",
        *header,
        "",
        "| script | benchmark | jaxode | peer | ratio |",
        "|---|---|---|---|---|",
        *[row for n in order for row in rows.get(n, [])],
        "",
        "| script | status | rows | wall time (s) | run at (UTC) | load average | note |",
        "|---|---|---|---|---|---|---|",
        *[status[n] for n in order],
        "",
    ]
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text("\n".join(text))
    print(f"wrote {results}")
    readme = directory.parent / "README.md"
    if ns.results is None and not ns.quick and readme.is_file() and _write_readme_table(
            readme, [row for n in order for row in rows.get(n, [])], status, order):
        print(f"wrote the benchmark table of {readme}")
    failed = [n for n in chosen if "FAILED" in status[n]]  # this run's scripts
    return 1 if failed else 0


README_START = "<!-- benchmark table: written by `jaxode bench` from RESULTS.md -->"
README_END = "<!-- end of benchmark table -->"


def _write_readme_table(readme: Path, rows: list[str], status: dict,
                        order: list[str]) -> bool:
    """Replace the README's benchmark table (between the two markers) by the rows of
    RESULTS.md, with when each script ran. False when the markers are missing."""
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        return False
    when = {n: status[n].split("|")[5].strip() for n in order}
    table = [
        README_START,
        "",
        "| script (`jaxode bench NAME`, run at UTC) | benchmark | jaxode | peer | "
        "ratio |",
        "|---|---|---|---|---|",
        *[row.replace(f"| {n} |", f"| `{n}` ({when[n]}) |", 1)
          for row in rows for n in order if row.startswith(f"| {n} |")],
        "",
        README_END,
    ]
    head, rest = text.split(README_START, 1)
    tail = rest.split(README_END, 1)[1]
    readme.write_text(head + "\n".join(table) + tail)
    return True


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if (len(argv) >= 2 and argv[0] == "demo" and argv[1] in DEMOS
            and {"-h", "--help"} & set(argv[2:])):
        print(_demo_help(argv[1]))
        return 0
    parser = _parser()
    ns, extra = parser.parse_known_args(argv)
    if extra and ns.command != "demo":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if ns.command is None:
        parser.print_usage(sys.stderr)
        return _fail("choose a command: `jaxode demo NAME` runs a demo ("
                     f"{', '.join(DEMOS)}); `jaxode bench [NAME]` runs the benchmarks; "
                     "`jaxode --help` says more")
    if ns.command == "demo":
        if ns.name is None:
            return _fail(f"name a demo: jaxode demo NAME, with NAME one of "
                         f"{', '.join(DEMOS)} (try `jaxode demo simulate --quick`)")
        if ns.name not in DEMOS:
            return _fail(f"unknown demo {ns.name!r}; valid demos: {', '.join(DEMOS)}")
        try:
            module = importlib.import_module(f"jaxode.demos.{DEMOS[ns.name][0]}")
        except ImportError as e:  # an install without the extras: its message says
            return _fail(str(e))
        options = {}
        if extra:  # a demo's own options (`jaxode demo lynx-hare --bayes`)
            demo_parser = argparse.ArgumentParser(prog=f"jaxode demo {ns.name}")
            _demo_extra_options(ns.name, demo_parser)
            options = vars(demo_parser.parse_args(extra))
        ns.out.mkdir(parents=True, exist_ok=True)
        results = module.run(out=ns.out, quick=ns.quick, **options) or {}
        missed = [t for t in results.get("targets", []) if not t.met]
        if missed:  # exit status 1: the demo ran but did not do what it claims
            _fail(f"demo {ns.name!r} missed {len(missed)} of its targets: "
                  + "; ".join(t.line() for t in missed))
            return 1
    elif ns.command == "bench":
        return _bench(ns)
    return 0


if __name__ == "__main__":
    sys.exit(main())
