"""Demos run by `jaxode demo NAME`: each module has `run(out, quick) -> None`."""
