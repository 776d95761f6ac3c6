"""Pulumi's entry point: Pulumi.yaml has no `main`, so the engine runs this directory's __main__.py.

The program is `infra/program.py`. It lives here, at the project root, so that the program and the
dynamic-provider host resolve the same virtualenv (see the comment in Pulumi.yaml).
"""

from infra.program import main

main()
