"""Test worker: the program fails before it serves (an uncaught exception, with a traceback)."""


def load_model() -> None:
    raise RuntimeError("crash-marker: the model file is corrupt")


load_model()
