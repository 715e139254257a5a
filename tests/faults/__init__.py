"""The fault-injection suite as a package, so that its conftest and tests have names of their own
(``faults.conftest`` beside ``conftest``) and mypy can check both in one run."""
