"""Run folders that never lose or mix a run.

A :class:`RunDir` is held for the whole of a training run:

* a lock (``flock`` on ``.dnrt.lock``) refuses a second run into a busy folder; the
  kernel drops it when its holder dies, so the lock of a killed run is taken over;
* on start it removes the temp files of interrupted atomic writes and finishes an
  interrupted ``--overwrite`` (the old run comes back unless the new one had already
  written its first checkpoint);
* ``--overwrite`` moves the old run into ``.replaced-<pid>/`` and deletes it only after
  the new run's first checkpoint; a failure or Ctrl-C before that puts it back;
* a folder whose run never reached its first checkpoint (``config.yaml`` but no
  ``last.pt``) restarts cleanly;
* ``metrics.jsonl`` is cut back to the resumed epoch, a torn last line included.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

from ..errors import RunError
from .checkpoint import write_text_atomic

#: what a run writes into its folder
RUN_FILES = ("config.yaml", "metrics.jsonl", "last.pt", "best.pt", "summary.json", "tb")
#: files that make a folder hold a run worth keeping (without them it is restarted over)
KEPT_FILES = ("last.pt", "best.pt", "summary.json")
LOCK_NAME = ".dnrt.lock"
ASIDE_PREFIX = ".replaced-"


def check_out_arg(out: str | os.PathLike | None) -> None:
    """Refuse an empty ``--out`` (``Path("")`` would be the current folder)."""
    if out is not None and not str(out).strip():
        raise RunError("--out is empty; give the run folder, e.g. --out runs/my-run")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


class RunDir:
    """The output folder of one run (see the module docstring).

    ``main=False`` (DDP ranks other than 0) makes every method a no-op."""

    def __init__(self, path: str | os.PathLike, *, main: bool = True):
        self.path = Path(path)
        self.main = main
        self.checkpoint_epoch: int | None = None  # the epoch last.pt holds, when known
        self.restored = False  # a failed --overwrite put the previous run back
        self._lock_fd: int | None = None
        self._created: list[Path] = []  # folders this run created, deepest first
        self._aside: Path | None = None  # the replaced run, until our first checkpoint
        self._fresh = False  # this run writes the folder's files from scratch

    # ------------------------------------------------------------------ lock

    def acquire(self) -> list[str]:
        """Create and lock the folder, then repair what a killed run left behind.

        Returns one note per repair; :class:`RunError` if the folder is busy or unusable."""
        if not self.main:
            return []
        p = self.path
        if p.exists() and not p.is_dir():
            raise RunError(f"--out {p} is a file, not a folder")
        missing, q = [], p
        while not q.exists() and q != q.parent:
            missing.append(q)
            q = q.parent
        try:
            p.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunError(f"cannot create output folder {p}: {exc.strerror}") from None
        self._created = missing
        try:
            self._lock_fd = self._lock()
        except RunError:
            self._remove_created()
            raise
        return self._recover()

    def _lock(self) -> int:
        import fcntl

        path = self.path / LOCK_NAME
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise RunError(
                    f"cannot write in output folder {self.path}: {exc.strerror}"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise RunError(
                        f"cannot lock output folder {self.path}: {exc.strerror}"
                    ) from None
                who = f" (pid {holder})" if holder.isdigit() else ""
                raise RunError(
                    f"output folder {self.path} is in use by another dnrt run{who}; "
                    "wait for it to finish or choose another --out"
                ) from None
            try:  # the previous holder may have unlinked the file between our open and flock
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                return fd
            os.close(fd)

    def release(self) -> None:
        """Drop the lock (and its file)."""
        if self._lock_fd is None:
            return
        try:
            (self.path / LOCK_NAME).unlink(missing_ok=True)
        finally:
            os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = None

    def _remove_created(self) -> None:
        for folder in self._created:  # deepest first, while empty
            try:
                folder.rmdir()
            except OSError:
                break
        self._created = []

    # ------------------------------------------------------------------ state

    def existing(self) -> list[str]:
        return [f for f in RUN_FILES if (self.path / f).exists()]

    def has_checkpoint(self) -> bool:
        return (self.path / "last.pt").is_file()

    def has_config(self) -> bool:
        return (self.path / "config.yaml").is_file()

    def _recover(self) -> list[str]:
        notes = []
        tmp = [f for f in self.path.glob(".*.tmp") if f.is_file()]
        for f in tmp:
            f.unlink(missing_ok=True)
        if tmp:
            notes.append(f"removed {len(tmp)} temp file(s) left by an interrupted write")
        for aside in sorted(self.path.glob(ASIDE_PREFIX + "*")):
            if not aside.is_dir():
                continue
            if self.has_checkpoint():  # the replacing run got its first checkpoint: it won
                shutil.rmtree(aside)
                notes.append("removed the run an interrupted --overwrite had replaced")
            else:
                self._restore(aside)
                notes.append("restored the run an interrupted --overwrite was replacing")
        return notes

    def _restore(self, aside: Path) -> None:
        for name in self.existing():
            _remove(self.path / name)
        for entry in aside.iterdir():
            os.replace(entry, self.path / entry.name)
        aside.rmdir()

    # ------------------------------------------------------------------ start / finish

    def begin(self, *, resume: bool, overwrite: bool) -> None:
        """Make the folder ready: keep it (``resume``), refuse a run in it, move it aside
        (``overwrite``), or clear a run that never reached its first checkpoint."""
        if not self.main or resume:
            return
        existing = self.existing()
        kept = [f for f in existing if f in KEPT_FILES]
        if kept and not overwrite:
            raise RunError(
                f"output folder {self.path} holds another run ({', '.join(existing)}); "
                "pass --resume to continue it or --overwrite to replace it"
            )
        if kept:
            aside = self.path / f"{ASIDE_PREFIX}{os.getpid()}"
            aside.mkdir()
            for name in existing:
                os.replace(self.path / name, aside / name)
            self._aside = aside
        else:  # a run killed before its first checkpoint: start over
            for name in existing:
                _remove(self.path / name)
        self._fresh = True

    def checkpoint_written(self, epoch: int) -> None:
        """Called after every ``last.pt``: the first one retires the replaced run."""
        self.checkpoint_epoch = epoch
        if self._aside is not None:
            shutil.rmtree(self._aside, ignore_errors=True)
            self._aside = None

    def abort(self) -> None:
        """A run failed: if it wrote no checkpoint, remove its files and restore what it
        replaced (folders it created go too)."""
        if not self.main or not self._fresh or self.checkpoint_epoch is not None:
            return
        if self._aside is not None:
            self._restore(self._aside)
            self._aside = None
            self.restored = True
        else:
            for name in self.existing():
                _remove(self.path / name)
        self._fresh = False  # done: a second call must not touch the restored run

    def close(self, *, failed: bool = False) -> None:
        """End the session: undo a failed start (see :meth:`abort`) and unlock."""
        try:
            if failed:
                self.abort()
        finally:
            self.release()
            if failed and self.main and self.path.is_dir() and not any(self.path.iterdir()):
                self._remove_created()

    # ------------------------------------------------------------------ metrics

    def trim_metrics(self, epoch: int) -> int:
        """Keep the lines of epochs ``<= epoch`` (a torn or corrupt line is dropped);
        returns how many lines were dropped."""
        path = self.path / "metrics.jsonl"
        if not self.main or not path.exists():
            return 0
        keep, dropped = [], 0
        for line in path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
                ok = isinstance(record, dict) and int(record["epoch"]) <= epoch
            except (ValueError, KeyError, TypeError):
                ok = False
            if ok:
                keep.append(line)
            elif line.strip():
                dropped += 1
        write_text_atomic("".join(ln + "\n" for ln in keep), path)
        return dropped

    # ------------------------------------------------------------------ messages

    def state_note(self) -> str:
        """What the folder holds after a failure: the checkpoint kept, or why there is none."""
        if self.checkpoint_epoch is not None:
            return f"{self.path / 'last.pt'} keeps epoch {self.checkpoint_epoch}"
        if self.restored:
            return f"the previous run in {self.path} was restored"
        return f"nothing was saved in {self.path}"

    def interrupted_message(self) -> str:
        """What Ctrl-C leaves behind: the checkpoint to resume from, or why there is none."""
        if self.checkpoint_epoch is not None:
            return (
                f"interrupted; {self.path / 'last.pt'} holds epoch {self.checkpoint_epoch} "
                f"(continue with --resume --out {self.path})"
            )
        if self.restored:
            return (
                "interrupted before the first checkpoint; "
                f"the previous run in {self.path} was restored"
            )
        return f"interrupted before the first checkpoint; nothing was saved in {self.path}"
