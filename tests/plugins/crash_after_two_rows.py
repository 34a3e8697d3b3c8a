"""Pytest plugin for tests: the process dies abruptly after two rows have finished."""

import os

finished = 0


def pytest_runtest_logfinish(nodeid, location):
    global finished
    finished += 1
    if finished == 2:
        os._exit(3)
