"""The example scripts run, and print what they promise. All but the 4-device one run
in one Python process (`run_in_one_process`): starting Python and importing JAX once
instead of six times saves half a minute."""

from conftest import ROOT, run_in_one_process

# name -> command-line arguments (small sizes)
RUNS = {
    "bptt": ["--length", "30"],
    "cnf": ["--steps", "2"],
    "lotka_volterra": ["--steps", "50", "--out", "fit.png"],
    "odenet": ["--steps", "2", "--channels", "4"],
    "simulate": ["--quick", "--out", "."],
    "sine": ["--steps", "30"],
}

# what each script's output must contain
PROMISED = {
    "bptt": ["vanishing", "max |hand - autodiff|"],
    "cnf": ["negative log-likelihood", "sample mean"],
    "lotka_volterra": ["a2"],
    "odenet": ["test error", "NFE forward"],
    "simulate": ["largest gap over the run "],
    "sine": ["single-step RMSE"],
}


def test_examples_run_and_print_what_they_promise(tmp_path):
    _, results = run_in_one_process(
        [(name, ROOT / "examples" / f"{name}.py", argv) for name, argv in RUNS.items()],
        cwd=tmp_path)
    assert sorted(results) == sorted(RUNS)
    failed = {name: (code, text[-2000:]) for name, (text, code) in results.items()
              if code != "0"}
    assert not failed, failed
    outputs = {name: text for name, (text, _) in results.items()}
    for name, words in PROMISED.items():
        for w in words:
            assert w in outputs[name], (name, w, outputs[name][-1000:])
    gap = float(outputs["simulate"].split("largest gap over the run ")[1].split()[0])
    assert 0.0 < gap < 5.0  # Euler with h = 0.1 stays within a few animals
    assert (tmp_path / "fit.png").stat().st_size > 5000
    assert (tmp_path / "simulate_example.png").stat().st_size > 5000
    assert (tmp_path / "simulate_example_phase.png").stat().st_size > 5000


def test_examples_directory_is_covered():
    # every example script runs in some test (ensemble, on four devices: tests/test_ensemble.py)
    scripts = {p.stem for p in (ROOT / "examples").glob("*.py")}
    assert scripts == set(RUNS) | {"ensemble"}
