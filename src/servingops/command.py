"""The one wrapper for every external binary: argv list, no shell, timeout, errors that quote the command."""

from __future__ import annotations

import os
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CommandError

DEFAULT_TIMEOUT = 300.0


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Command:
    """An external command. `run()` never goes through a shell."""

    argv: tuple[str, ...]
    cwd: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    timeout: float = DEFAULT_TIMEOUT

    @property
    def quoted(self) -> str:
        return shlex.join(self.argv)

    def run(self, *, input: str | None = None, check: bool = True) -> Result:
        """Run to completion. With check=True a non-zero exit raises CommandError carrying stderr."""
        try:
            proc = subprocess.run(
                self.argv,
                cwd=self.cwd,
                env={**os.environ, **self.env},
                input=input,
                capture_output=True,
                text=True,
                timeout=self.timeout,
            )
        except FileNotFoundError as exc:
            raise CommandError(f"cannot run `{self.quoted}`: {exc.strerror}") from exc
        except subprocess.TimeoutExpired as exc:
            raise CommandError(f"`{self.quoted}` timed out after {self.timeout:g}s") from exc
        result = Result(self.argv, proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise CommandError(
                f"`{self.quoted}` exited {proc.returncode}: {last_lines(proc.stderr or proc.stdout)}"
            )
        return result


def last_lines(text: str, limit: int = 5) -> str:
    """The tail of a tool's output, joined on one line, for error messages."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-limit:]) or "(no output)"
