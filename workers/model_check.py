"""Check that the configured model loads, in a throwaway interpreter: for the worker's parent process.

The Celery worker's parent forks the pool, so it must stay free of torch threads and CUDA
(:mod:`workers.fork_safety`) and never loads the model itself. It still refuses to start with a model
that cannot load: :func:`check_loads` runs ``python -m workers.model_check`` (a fresh interpreter, not
a fork), which loads the model as a pool process would and reports the problem, if any, in one line.
"""

from __future__ import annotations

import subprocess
import sys

from service.settings import ConfigurationError, ServiceSettings

CHECK_TIMEOUT_SECONDS = 600.0
_passed: set[str] = set()


def check_loads(settings: ServiceSettings) -> None:
    """Raise ConfigurationError with the reason if the model in ``settings`` cannot be loaded (checked once)."""
    settings.check_runtime()
    settings.check_model_dir()
    key = settings.model_dump_json()
    if key in _passed:
        return
    try:
        done = subprocess.run([sys.executable, "-m", "workers.model_check"], input=settings.model_dump_json(), check=False,
                              capture_output=True, text=True, timeout=CHECK_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired as exc:
        raise ConfigurationError(f"Loading the model in {settings.model_dir} took over {exc.timeout:g} s.") from exc
    if done.returncode != 0:  # our one-line reason on stdout, or a crash's last traceback line on stderr
        lines = (done.stdout.strip() or done.stderr.strip() or "the model check exited without a word").splitlines()
        raise ConfigurationError(lines[-1])
    _passed.add(key)


def main() -> int:
    from workers.model_cache import get_scorer

    settings = ServiceSettings.model_validate_json(sys.stdin.read())
    try:
        get_scorer(settings)
    except ConfigurationError as exc:
        print(exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
