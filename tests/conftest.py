pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.http_recorder",
    "tests.fixtures.dovecot",
    "tests.fixtures.service",
    "tests.fixtures.oauth",
]
