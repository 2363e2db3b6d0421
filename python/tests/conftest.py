"""The package's own tests: they run against the installed package and the
program pip installed beside it (python/run-tests.sh), never target/."""

pytest_plugins = ["pytester"]
