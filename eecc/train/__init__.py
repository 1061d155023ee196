"""Training with torch: exit heads (fit, modules), joint fine-tuning, NACHOS. torch is imported only here.

Importing any module of this package without torch raises a one-line MissingExtra naming the
'train' extra, so a compile that needs training says what to install instead of a traceback.
"""

from eecc.errors import require

require("torch", "train", "training exit heads (eecc.train)")
