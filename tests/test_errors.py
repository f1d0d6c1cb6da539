"""The error boundary's classification: exit code and one line for any failure."""

from __future__ import annotations

import errno

import pytest
import torch

from dnrt_core.errors import (
    EXIT_BAD_INPUT,
    EXIT_ENVIRONMENT,
    EXIT_INTERRUPTED,
    ConfigError,
    DataError,
    EnvironmentFailure,
    NonFiniteLossError,
    RunInterrupted,
    describe,
)

CASES = [
    (ConfigError("train.lr must be a positive number, got 0"), EXIT_BAD_INPUT, "train.lr must"),
    (DataError("a\nsecond line"), EXIT_BAD_INPUT, "a"),
    (KeyError("model"), EXIT_BAD_INPUT, "missing key 'model'"),
    (TypeError("bad type"), EXIT_BAD_INPUT, "bad type"),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "x.yaml"), EXIT_BAD_INPUT,
     "No such file or directory: x.yaml"),
    (NotADirectoryError(errno.ENOTDIR, "Not a directory", "f/sub"), EXIT_BAD_INPUT,
     "Not a directory: f/sub"),
    (OSError(errno.ENOSPC, "No space left on device", "r/last.pt"), EXIT_ENVIRONMENT,
     "No space left on device: r/last.pt"),
    (OSError(errno.EROFS, "Read-only file system", "r"), EXIT_ENVIRONMENT, "Read-only"),
    (EnvironmentFailure("disk full"), EXIT_ENVIRONMENT, "disk full"),
    (NonFiniteLossError("loss is nan"), EXIT_ENVIRONMENT, "loss is nan"),
    (torch.OutOfMemoryError("CUDA out of memory"), EXIT_ENVIRONMENT, "out of device memory"),
    (RuntimeError("CUDA error: device-side assert"), EXIT_ENVIRONMENT, "device failure"),
    (RunInterrupted("interrupted; r/last.pt holds epoch 2"), EXIT_INTERRUPTED, "holds epoch 2"),
    (KeyboardInterrupt(), EXIT_INTERRUPTED, "interrupted"),
    (AttributeError("'X' has no attribute 'y'"), EXIT_ENVIRONMENT,
     "internal error (AttributeError: 'X' has no attribute 'y'); rerun with --debug"),
    (ValueError(""), EXIT_BAD_INPUT, "ValueError"),
]  # fmt: skip


@pytest.mark.parametrize(("exc", "code", "text"), CASES, ids=[type(c[0]).__name__ for c in CASES])
def test_describe(exc, code, text):
    got_code, line = describe(exc)
    assert got_code == code
    assert text in line
    assert "\n" not in line


def test_dataloader_worker_errors_keep_their_message():
    wrapped = DataError(
        "Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent "
        'call last):\n  File "x.py", line 1\ndnrt_core.errors.DataError: cannot read image '
        "a.png: image file is truncated\n"
    )
    assert describe(wrapped) == (EXIT_BAD_INPUT, "cannot read image a.png: image file is truncated")
