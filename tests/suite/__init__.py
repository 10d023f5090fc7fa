"""Tests of the suite's own machinery (tests/conftest.py): the fixed-port tripwire and the
``broker`` marker."""
