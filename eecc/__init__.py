"""eecc: early-exit conversion compiler."""

from pathlib import Path as _Path

__version__ = "0.1.0"

# passes/, targets/ and runtime/ sit beside eecc/ in a checkout and are installed as eecc.passes,
# eecc.targets and eecc.runtime (pyproject package-dir). Adding the checkout root to this package's
# search path makes `import eecc.passes` work from a plain checkout too; in an installed copy the
# root is site-packages, which has no passes/, and nothing changes.
_root = _Path(__file__).resolve().parent.parent
if (_root / "passes" / "__init__.py").is_file() and str(_root) not in __path__:
    __path__.append(str(_root))
