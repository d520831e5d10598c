"""A module only importable when PYTHONPATH names this directory."""

VALUE = "from PYTHONPATH"
