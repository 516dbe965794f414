"""Loaded only in CI's faketime passes (PYTHONPATH=.ci/faketime): works around libfaketime 0.9.10's bug #426.

With FAKETIME_DONT_FAKE_MONOTONIC=1, libfaketime turns Python 3.11's time.sleep (clock_nanosleep on
CLOCK_MONOTONIC with TIMER_ABSTIME) into EINVAL. A relative select() timeout is untouched by it.
https://github.com/wolfcw/libfaketime/issues/426
"""

import select
import time


def _sleep(seconds: float) -> None:
    select.select([], [], [], seconds)


time.sleep = _sleep
