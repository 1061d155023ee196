"""eecc: early-exit conversion compiler."""

import importlib.abc
import importlib.util
import sys
from pathlib import Path as _Path

__version__ = "0.1.0"

# passes/, targets/ and runtime/ sit beside eecc/ in a checkout and are installed as eecc.passes,
# eecc.targets and eecc.runtime (pyproject package-dir). This finder makes those three names resolve
# to the checkout's folders, so `import eecc.passes` works from a plain checkout too (and a checkout
# on PYTHONPATH wins over an editable install of another one). In an installed copy the folders are
# not beside eecc/ and the finder is not registered.
_ROOT = _Path(__file__).resolve().parent.parent
_SUBPACKAGES = ("passes", "targets", "runtime")


class _CheckoutFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        head, _, short = name.partition(".")
        if head != __name__ or short not in _SUBPACKAGES:
            return None
        folder = _ROOT / short
        return importlib.util.spec_from_file_location(name, folder / "__init__.py",
                                                      submodule_search_locations=[str(folder)])


if all((_ROOT / p / "__init__.py").is_file() for p in _SUBPACKAGES) and \
        not any(isinstance(f, _CheckoutFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _CheckoutFinder())
