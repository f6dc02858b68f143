"""The ``imagewright`` command: parse, call the library, render. Thin on purpose.

``main`` is the entry point, ``group`` the click command group, ``commands`` the table of verbs.
"""

#: ``programs.runner.NO_SANDBOX_ENV``, named here so that a command that runs no program
#: (``inspect``) starts without importing the runner (tests/test_cli_startup.py checks both agree);
#: here because both the entry point and the group read it.
NO_SANDBOX_ENV = "IMAGEWRIGHT_NO_SANDBOX"
