"""The development and CI harness: environments on the Docker engine, a test Dovecot, mail to import.

It sits on top of the other packages and nothing below imports it: the service (`sync_function`)
and the Pulumi program (`infra`) know nothing of it, and the service image does not contain it.
It shares the container specs with Pulumi (`infra.containers`, `infra.function_specs`) and realises
them on the local engine. Used by the tests, `bench/`, `autosync env …` and the pytest plugin
(`harness.pytest_plugin`) that other projects' suites load.
"""
