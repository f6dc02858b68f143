"""The ``imagewright`` command: parse, call the library, render. Thin on purpose."""
