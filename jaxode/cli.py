"""The `jaxode` command: `jaxode demo NAME`, `jaxode bench NAME`."""

import argparse
import importlib
import sys
from pathlib import Path

# name -> (module under jaxode.demos, one-line description)
DEMOS: dict[str, tuple[str, str]] = {
    "simulate": ("simulate", "the two-species competition model as an RNN and "
                 "adaptively"),
    "lotka-volterra": ("lotka_volterra", "recover the competition model's six "
                       "parameters from seven observations (jaxode.fit)"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxode",
        description="jaxode: differentiable simulation in JAX. An RNN and an ODE "
        "solver are the same step function.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="run a demo: prints its results and saves its figures",
        description="Run a demo. Available demos:\n" + "\n".join(
            f"  {name:<16}{desc}" for name, (_, desc) in DEMOS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("name", metavar="NAME", help=f"one of: {', '.join(DEMOS)}")
    demo.add_argument("--out", type=Path, default=Path("out"),
                      help="directory for the figures (default: ./out)")
    demo.add_argument("--quick", action="store_true",
                      help="a short run (fewer steps and smaller sizes)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    ns = parser.parse_args(argv)
    if ns.command == "demo":
        if ns.name not in DEMOS:
            parser.error(
                f"unknown demo {ns.name!r}; valid demos: {', '.join(DEMOS)}")
        module = importlib.import_module(f"jaxode.demos.{DEMOS[ns.name][0]}")
        ns.out.mkdir(parents=True, exist_ok=True)
        module.run(out=ns.out, quick=ns.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
