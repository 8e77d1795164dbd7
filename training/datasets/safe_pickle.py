"""Read annotation pickles without running code from them.

``pickle.load`` calls whatever callable a file names, so a doctored annotation file can run shell
commands. :func:`load` admits only the globals plain annotation data needs:

- containers and numbers: ``dict``, ``list``, ``tuple``, ``set``, ``frozenset``, ``complex``,
  ``collections.OrderedDict`` (str, int, float, bytes, bool and None need no global);
- ``_codecs.encode`` restricted to latin-1, which protocol-2 pickles use to spell ``bytes``;
- numpy arrays, scalars and dtypes: ``numpy.dtype`` and the reconstruct functions ``scalar``,
  ``_frombuffer`` and ``_reconstruct`` under both numpy 1 (``numpy.core.*``) and numpy 2
  (``numpy._core.*``) module paths, resolved to the installed numpy's own functions. ``numpy.ndarray``
  is admitted only as ``_reconstruct``'s argument, and ``_reconstruct`` only as numpy's pickles call it
  (an empty array that the pickle's state then fills), so a file cannot allocate an array bigger than
  itself.

Anything else (``os.system``, ``pandas`` frames, any class) raises :class:`UnsafePickleError` naming
the refused global, before it is called.
"""

from __future__ import annotations

import collections
import io
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np

from training.datasets.records import DatasetError

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]


class UnsafePickleError(DatasetError):
    """The pickle names a global outside the allow-list."""


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it to rebuild ``bytes``; other codecs are refused."""
    if encoding.lower().replace("-", "").replace("_", "") not in ("latin1", "iso88591"):
        raise UnsafePickleError(
            f"refused _codecs.encode with encoding {encoding!r} (only latin-1 is admitted)"
        )
    if not isinstance(text, str):
        raise UnsafePickleError(f"refused _codecs.encode of {type(text).__name__} (only str is admitted)")
    return text.encode("latin1")


_NDARRAY = object()  # stands in for numpy.ndarray, which only _reconstruct may receive


def _reconstruct(subtype: object, shape: object, typecode: object) -> np.ndarray:
    """numpy's ``_reconstruct`` as numpy's own pickles call it: an empty ndarray to be filled by state."""
    if subtype is not _NDARRAY or not isinstance(shape, tuple) or shape != (0,):
        raise UnsafePickleError("refused numpy _reconstruct other than of an empty numpy.ndarray")
    return _multiarray._reconstruct(np.ndarray, shape, typecode)


def _allowed_globals() -> dict[tuple[str, str], Callable[..., object]]:
    allowed: dict[tuple[str, str], Callable[..., object]] = {}
    for module in ("builtins", "__builtin__"):  # Python 3 and Python 2 spellings
        for value in (dict, list, tuple, set, frozenset, complex):
            allowed[(module, value.__name__)] = value
    allowed[("collections", "OrderedDict")] = collections.OrderedDict
    allowed[("_codecs", "encode")] = _latin1_encode
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = _reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = _multiarray.scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = _numeric._frombuffer
    allowed[("numpy", "ndarray")] = _NDARRAY  # type: ignore[assignment]
    allowed[("numpy", "dtype")] = np.dtype
    return allowed


_ALLOWED = _allowed_globals()


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Callable[..., object]:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refused to load global {module}.{name}: annotation pickles may hold only containers, "
                "numbers, strings, bytes and numpy arrays"
            ) from None

    def persistent_load(self, pid: object) -> object:
        raise UnsafePickleError(
            f"refused persistent id {pid!r}: annotation pickles may not reference objects"
        )


def loads(data: bytes, source: str = "<bytes>") -> object:
    """Unpickle ``data`` with the allow-list above; ``source`` names it in error messages.

    Raises :class:`UnsafePickleError` for a refused global and :class:`DatasetError` for a truncated or
    malformed pickle.
    """
    # latin1 decodes Python 2 ``str`` (and the raw bytes of numpy arrays pickled by Python 2) losslessly.
    unpickler = _RestrictedUnpickler(io.BytesIO(data), encoding="latin1")
    try:
        return unpickler.load()
    except UnsafePickleError as err:
        raise UnsafePickleError(f"{source}: {err}") from None
    except Exception as err:  # noqa: BLE001  any other failure of a restricted unpickle means the file is not readable
        raise DatasetError(f"{source}: not a readable pickle ({type(err).__name__}: {err})") from None


def load(path: str | Path) -> object:
    """Unpickle the file at ``path`` with the allow-list above."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DatasetError(f"cannot read {path}: {err.strerror or err}") from None
    return loads(data, source=str(path))
